"""The alerts this service reads and writes (schemas/alert.schema.json)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

# The repository's schema, when the package runs from a checkout.
REPO_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "alert.schema.json"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_identity(alert: dict) -> tuple[str, str, str]:
    """What makes one retraining request one episode: model name, version, and when the monitor
    raised it (the monitor raises one performance request per episode; a re-read of the same
    record, or a copy of it, carries the same three)."""
    return (alert["model"]["name"], str(alert["model"]["version"]), str(alert["at"]))


def request_summary(alert: dict) -> dict:
    d = alert.get("details") or {}
    out = {"at": alert["at"], "version": str(alert["model"]["version"]), "reason": d.get("reason", "unknown")}
    if isinstance(d.get("rmse"), (int, float)):
        out["rmse"] = float(d["rmse"])
    if isinstance(d.get("threshold"), (int, float)):
        out["threshold"] = float(d["threshold"])
    return out


def outcome(kind: str, request: dict, details: dict) -> dict:
    """An outcome alert about the request's model and variant."""
    return {
        "kind": kind,
        "model": {"name": request["model"]["name"], "version": str(request["model"]["version"])},
        "variant": request.get("variant"),
        "at": now_rfc3339(),
        "details": {**details, "request": request_summary(request)},
    }


def handled_identity(alert: dict) -> tuple[str, str, str] | None:
    """For an outcome alert, the identity of the request it answered."""
    req = (alert.get("details") or {}).get("request") or {}
    if "at" not in req:
        return None
    return (alert["model"]["name"], str(req.get("version", alert["model"]["version"])), str(req["at"]))


class Validator:
    """Checks outgoing alerts against the JSON Schema (when the schema and the `jsonschema`
    package are there); an alert that fails is a bug and is not sent."""

    def __init__(self, path: Path | None) -> None:
        self.validator = None
        self.path = path or (REPO_SCHEMA if REPO_SCHEMA.is_file() else None)
        if self.path is None:
            return
        try:
            import jsonschema
        except ModuleNotFoundError:
            return
        schema = json.loads(Path(self.path).read_text(encoding="utf-8"))
        self.validator = jsonschema.Draft202012Validator(schema)

    def check(self, alert: dict) -> None:
        if self.validator is None:
            return
        errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in self.validator.iter_errors(alert)]
        if errors:
            raise ValueError(f"alert fails {self.path}: {errors}")
