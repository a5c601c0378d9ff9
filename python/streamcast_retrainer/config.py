"""Settings: command-line flags, environment variables, and (optionally) the worker's own TOML.

Precedence, highest first: a flag on the command line, its environment variable
(`STREAMCAST_RETRAINER_<FLAG>`, e.g. `STREAMCAST_RETRAINER_MARGIN=0.1`), the worker config given
with `--config` (bootstrap servers, topics, model root and name, `monitor.join_by`,
`monitor.actuals_from_input`, and `[kafka]` client properties), then the defaults below.

librdkafka properties (SASL, TLS) come from the worker config's `[kafka]` table, from
`--kafka KEY=VALUE`, or from `STREAMCAST_KAFKA__<KEY>` / `STREAMCAST_KAFKA__<KEY>_FILE` as the
worker reads them (`_` stands for `.`), so one Kubernetes Secret serves both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "STREAMCAST_RETRAINER_"

# Properties streamcast manages on its own clients; the retrainer manages them too.
RESERVED_KAFKA_KEYS = {"group.id", "enable.auto.commit", "enable.auto.offset.store"}


@dataclass
class Settings:
    bootstrap_servers: str = "localhost:9092"
    alerts_topic: str = "alerts"
    input_topic: str = "input_data"
    actuals_topic: str = "actuals"
    model_root: Path = Path("models")
    model_name: str = "co2-mlp"
    group_id: str = "streamcast-retrainer"
    # Publish only when candidate RMSE < current RMSE x (1 - margin).
    margin: float = 0.05
    # Newest records read from the input topic, and from the actuals topic (across partitions).
    history: int = 5000
    # The newest windows (by arrival) kept out of training and scored on.
    holdout: int = 200
    # Fewest training windows a retrain needs.
    min_train: int = 200
    join_by: str = "id"
    actuals_from_input: bool = False
    # JSON merged over the bundle's recipe (e.g. '{"max_iter": 1}').
    recipe_override: dict = field(default_factory=dict)
    # Requests older than this (seconds) are not acted on.
    max_request_age_s: float = 24 * 3600.0
    # Handle what is on the alerts topic, then exit (a CronJob).
    once: bool = False
    # With --once: stop after the topic has been idle this long once caught up.
    idle_exit_s: float = 5.0
    # How long history reads may take.
    read_timeout_s: float = 60.0
    alert_schema: Path | None = None
    # `streamcast models validate` every bundle before publishing it: auto | always | never.
    check: str = "auto"
    streamcast_bin: str | None = None
    log_format: str = "json"
    kafka: dict = field(default_factory=dict)


def parse_duration(text: str) -> float:
    """A humantime-style duration ("500ms", "30s", "15m", "1h", "7d", "1week", "1h 30m"),
    in seconds."""
    units = {
        "ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0, "m": 60.0, "min": 60.0, "mins": 60.0,
        "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0,
        "days": 86400.0, "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    }
    s = text.strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", s)
    if not parts or re.sub(r"\s|\d+(?:\.\d+)?\s*[a-z]+", "", s):
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in units:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        total += float(number) * units[unit]
    return total


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


# flag name -> (Settings field, parser, help)
FLAGS: dict[str, tuple[str, Any, str]] = {
    "bootstrap-servers": ("bootstrap_servers", str, "Kafka bootstrap servers (also STREAMCAST_BOOTSTRAP_SERVERS)"),
    "alerts-topic": ("alerts_topic", str, "topic the monitor publishes alerts to, and this service too"),
    "input-topic": ("input_topic", str, "the input events topic (history)"),
    "actuals-topic": ("actuals_topic", str, "the actuals topic (history)"),
    "model-root": ("model_root", str, "the model root the workers watch (models/<name>/<version>/)"),
    "model-name": ("model_name", str, "the model this service retrains"),
    "group-id": ("group_id", str, "consumer group on the alerts topic"),
    "margin": ("margin", float, "publish only when candidate RMSE < current RMSE x (1 - margin)"),
    "history": ("history", int, "newest records read from the input topic, and from the actuals topic (across partitions)"),
    "holdout": ("holdout", int, "newest windows scored on and never trained on"),
    "min-train": ("min_train", int, "fewest training windows a retrain needs"),
    "join-by": ("join_by", str, "how actuals address forecasts, as monitor.join_by: id | time"),
    "actuals-from-input": ("actuals_from_input", _bool, "the input is its own ground truth (monitor.actuals_from_input)"),
    "recipe-override": ("recipe_override", _json_object, "JSON object merged over the bundle's recipe"),
    "max-request-age": ("max_request_age_s", parse_duration, "older requests are skipped (e.g. 24h)"),
    "once": ("once", _bool, "handle the pending alerts, then exit (for a CronJob)"),
    "idle-exit": ("idle_exit_s", parse_duration, "with --once: exit after the topic was idle this long"),
    "read-timeout": ("read_timeout_s", parse_duration, "bound on each history read"),
    "check": ("check", str, "run `streamcast models validate` on each bundle: auto (when the binary is found) | always | never"),
    "streamcast-bin": ("streamcast_bin", str, "the streamcast binary for --check (default: STREAMCAST_BIN, the repo's target/release, PATH)"),
    "alert-schema": ("alert_schema", Path, "validate every alert against this JSON Schema before sending"),
    "log-format": ("log_format", str, "json | text"),
}


def _from_worker_config(path: Path) -> dict[str, Any]:
    import tomllib

    with path.open("rb") as f:
        doc = tomllib.load(f)
    out: dict[str, Any] = {}
    kafka = dict(doc.get("kafka") or {})
    if "bootstrap.servers" in kafka:
        out["bootstrap_servers"] = str(kafka.pop("bootstrap.servers"))
    out["kafka"] = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in kafka.items()}
    topics = doc.get("topics") or {}
    for key, name in (("alerts", "alerts_topic"), ("input", "input_topic"), ("actuals", "actuals_topic")):
        if key in topics:
            out[name] = str(topics[key])
    model = doc.get("model") or {}
    if "root" in model:
        # As the worker reads it: a relative root is relative to the working directory.
        out["model_root"] = str(model["root"])
    if "name" in model:
        out["model_name"] = str(model["name"])
    monitor = doc.get("monitor") or {}
    if "join_by" in monitor:
        out["join_by"] = str(monitor["join_by"])
    if "actuals_from_input" in monitor:
        out["actuals_from_input"] = bool(monitor["actuals_from_input"])
    return out


def _kafka_from_env(environ: dict[str, str]) -> dict[str, str]:
    """STREAMCAST_KAFKA__SASL_MECHANISM=PLAIN -> sasl.mechanism; a `_FILE` suffix reads a file."""
    out: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith("STREAMCAST_KAFKA__"):
            continue
        key = name[len("STREAMCAST_KAFKA__"):]
        if key.endswith("_FILE"):
            key = key[: -len("_FILE")]
            value = Path(value).read_text(encoding="utf-8").strip()
        out[key.lower().replace("_", ".")] = value
    return out


def parse(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    p = argparse.ArgumentParser(
        prog="python -m streamcast_retrainer",
        description="Retrain a streamcast model on `retrain_requested` alerts and publish it when it is better.",
    )
    p.add_argument("--config", type=Path, help="the worker's streamcast.toml (topics, model, [kafka], [monitor])")
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE", help="a librdkafka property (repeatable)")
    for flag, (_, convert, help_text) in FLAGS.items():
        if convert is _bool:
            p.add_argument(f"--{flag}", nargs="?", const="true", metavar="BOOL", help=help_text)
        else:
            p.add_argument(f"--{flag}", help=help_text)
    args = p.parse_args(argv)

    values: dict[str, Any] = {}
    config = args.config or (Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None)
    if config is not None:
        values.update(_from_worker_config(config))
    if environ.get("STREAMCAST_BOOTSTRAP_SERVERS"):
        values["bootstrap_servers"] = environ["STREAMCAST_BOOTSTRAP_SERVERS"]
    kafka = dict(values.get("kafka", {}))
    kafka.update(_kafka_from_env(environ))
    for flag, (name, convert, _) in FLAGS.items():
        env_name = ENV_PREFIX + flag.upper().replace("-", "_")
        raw = getattr(args, name_of(flag))
        if raw is None:
            raw = environ.get(env_name)
        if raw is None:
            continue
        try:
            values[name] = convert(raw)
        except (ValueError, json.JSONDecodeError) as e:
            p.error(f"--{flag} / {env_name}: {e}")
    for item in args.kafka:
        if "=" not in item:
            p.error(f"--kafka {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        kafka[k.strip()] = v
    if "bootstrap.servers" in kafka:
        values["bootstrap_servers"] = kafka.pop("bootstrap.servers")
    for key in RESERVED_KAFKA_KEYS & set(kafka):
        p.error(f"kafka property {key!r} is managed by the retrainer")
    values["kafka"] = kafka

    s = Settings(**values)
    if s.join_by not in ("id", "time"):
        p.error(f"--join-by must be `id` or `time`, not {s.join_by!r}")
    if s.actuals_from_input and s.join_by != "time":
        p.error("--actuals-from-input needs --join-by time (as monitor.actuals_from_input does)")
    if not 0.0 <= s.margin < 1.0:
        p.error("--margin must be in [0, 1)")
    if s.holdout < 1 or s.min_train < 1 or s.history < 1:
        p.error("--history, --holdout and --min-train must be positive")
    if s.check not in ("auto", "always", "never"):
        p.error("--check must be auto, always or never")
    if s.log_format not in ("json", "text"):
        p.error("--log-format must be json or text")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(s.model_root)):
        p.error(f"model root {s.model_root}: this reference retrainer writes to a local directory (see README.md)")
    s.model_root = Path(s.model_root)
    return s


def name_of(flag: str) -> str:
    """argparse's attribute for --flag."""
    return flag.replace("-", "_")
