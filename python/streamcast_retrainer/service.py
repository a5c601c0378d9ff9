"""The service: follow the alerts topic, retrain on requests, publish or reject."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from streamcast_bundle.core import version_key, versions  # streamcast's own `latest` order

from . import OUTCOME_KINDS, __version__
from . import alerts as A
from . import data as D
from . import recipe as R
from .config import Settings, parse_duration
from .serving import ServedBundle, scores

log = logging.getLogger("streamcast_retrainer")


class Failure(Exception):
    """A retrain that could not be carried out; `reason` is snake_case for the alert."""

    def __init__(self, reason: str, message: str, **facts) -> None:
        super().__init__(message)
        self.reason = reason
        self.facts = facts


def answered_by(root: Path, name: str, newer: list[str], request: dict) -> str | None:
    """The newer version this service published for `request` (its bundle's
    `metadata.retrained.request` names the same time and version), if any."""
    for v in reversed(newer):
        try:
            meta = json.loads((root / name / v / "bundle.json").read_text()).get("metadata") or {}
        except (OSError, ValueError):
            continue
        asked = (meta.get("retrained") or {}).get("request") or {}
        if asked.get("at") == request["at"] and str(asked.get("version")) == str(request["model"]["version"]):
            return v
    return None


def _json_safe(v):
    return float(f"{v:.9g}") if isinstance(v, float) else v


def _log(level: int, msg: str, **fields) -> None:
    log.log(level, msg, extra={"fields": fields})


class Retrainer:
    def __init__(self, settings: Settings, producer=None, history_reader=None) -> None:
        self.s = settings
        self.validator = A.Validator(settings.alert_schema)
        self.handled: set[tuple[str, str, str]] = set()
        self._producer = producer
        self._read = history_reader

    # ---- Kafka, injectable for tests -----------------------------------------------------

    @property
    def producer(self):
        if self._producer is None:
            from .kafka_io import AlertProducer

            self._producer = AlertProducer(self.s)
        return self._producer

    def read(self, topic: str) -> list[D.Record]:
        """The newest `history` records of `topic` across its partitions (by record timestamp)."""
        if self._read is not None:
            records = self._read(topic)
        else:
            from .kafka_io import read_tail

            records = read_tail(self.s, topic, self.s.history, self.s.read_timeout_s)
        return sorted(records, key=lambda r: r.arrival)[-self.s.history :]

    # ---- the alerts topic -----------------------------------------------------------------

    def remember(self, alert: dict) -> None:
        """Notes an outcome alert already on the topic (ours, or an earlier run's)."""
        ident = A.handled_identity(alert)
        if ident is not None:
            self.handled.add(ident)

    def on_alert_outcome_only(self, payload: bytes) -> None:
        """Reads the topic's history: remembers outcomes about this model, acts on nothing."""
        try:
            alert = json.loads(payload)
        except ValueError:
            return
        if (
            isinstance(alert, dict)
            and alert.get("kind") in OUTCOME_KINDS
            and (alert.get("model") or {}).get("name") == self.s.model_name
        ):
            self.remember(alert)

    def on_alert(self, payload: bytes) -> dict | None:
        """Handles one alerts record; returns the outcome alert it published, if any."""
        try:
            alert = json.loads(payload)
            kind, model = alert["kind"], alert["model"]
            name, version = model["name"], str(model["version"])
            if kind == "retrain_requested":
                ident, at = A.request_identity(alert), D.parse_time(alert["at"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # the topic is shared: not an alert we understand
        if name != self.s.model_name:
            return None
        if kind in OUTCOME_KINDS:
            self.remember(alert)
            return None
        if kind != "retrain_requested":
            return None
        fields = {"model": name, "version": version, "request_at": alert["at"]}
        if ident in self.handled:
            _log(logging.INFO, "Retraining request already handled; skipped.", **fields)
            return None
        if alert.get("variant") not in ("primary", None):
            _log(logging.INFO, "Retraining request about a non-primary variant; skipped.", variant=alert.get("variant"), **fields)
            return None
        age = time.time() - at
        if age > self.s.max_request_age_s:
            _log(logging.INFO, "Retraining request too old; skipped.", age_s=round(age, 1), **fields)
            return None
        newer = [v for v in versions(self.s.model_root, name) if version_key(v) > version_key(version)]
        if newer:
            # This service's own answer to this very request (published before a restart): done.
            # Any other newer version (an operator's, or one of ours rolled back): retraining from
            # the requested version could publish above a better one, so this reference service
            # skips, loudly; answer such a request by hand or adapt the rule.
            mine = answered_by(self.s.model_root, name, newer, alert)
            if mine is not None:
                _log(logging.INFO, "Retraining request already answered by a published version; skipped.", published=mine, **fields)
            else:
                _log(logging.WARNING, "Retraining request about an older version than the newest in the model root; skipped.", newest=newer[-1], **fields)
            self.handled.add(ident)
            return None
        _log(logging.WARNING, "Retraining requested.", reason=(alert.get("details") or {}).get("reason"), **fields)
        started = time.monotonic()
        try:
            kind_out, details = self.retrain(alert)
        except Failure as f:
            kind_out, details = "retrain_failed", {"reason": f.reason, "message": str(f), **f.facts}
        except Exception as e:  # noqa: BLE001 - a reference service reports, then carries on
            log.exception("Retraining failed unexpectedly.")
            kind_out, details = "retrain_failed", {"reason": "error", "message": f"{type(e).__name__}: {e}"}
        details["duration_s"] = round(time.monotonic() - started, 3)
        out = A.outcome(kind_out, alert, {k: _json_safe(v) for k, v in details.items()})
        self.validator.check(out)
        # The outcome is the service's answer: retry a broker hiccup rather than lose it. Should
        # it still fail, the exception stops the service before the request's offset is
        # committed, and a restart finds the request again.
        for attempt in range(5):
            try:
                self.producer.send(out)
                break
            except RuntimeError as e:
                if attempt == 4:
                    raise
                _log(logging.WARNING, "Outcome alert not acknowledged; retrying.", error=str(e), **fields)
                time.sleep(2.0 * (attempt + 1))
        self.handled.add(ident)
        level = logging.WARNING if kind_out == "retrain_failed" else logging.INFO
        _log(level, f"Retraining outcome: {kind_out}.", **{k: v for k, v in out["details"].items() if k != "recipe"}, **fields)
        return out

    # ---- one retrain -----------------------------------------------------------------------

    def retrain(self, request: dict) -> tuple[str, dict]:
        s = self.s
        name, version = request["model"]["name"], str(request["model"]["version"])
        current_dir = s.model_root / name / version
        if not (current_dir / "bundle.json").is_file():
            raise Failure("current_bundle_missing", f"no bundle at {current_dir}")
        current = ServedBundle(current_dir)
        try:
            recipe = R.effective((current.metadata or {}).get("recipe"), s.recipe_override)
        except R.RecipeError as e:
            raise Failure("recipe", str(e)) from None
        if current.quantiles:
            raise Failure("unsupported_bundle", "quantile bundles are not retrained by this reference service")

        # History.
        step_s = parse_duration(current.frequency) if current.frequency else None
        tol_s = parse_duration(current.frequency_tolerance) if current.frequency_tolerance else None
        if s.join_by == "time" and step_s is None:
            raise Failure("unsupported_bundle", 'join_by = "time" needs the bundle to declare `frequency`')
        inputs = self.read(s.input_topic)
        decoded = D.decode_inputs(inputs, current.features, current.window)
        target_index = current.features.index(current.target) if current.target in current.features else None
        by_id = by_time = None
        n_actuals = 0
        if not s.actuals_from_input:
            actual_records = self.read(s.actuals_topic)
            n_actuals = len(actual_records)
            if s.join_by == "id":
                by_id = D.decode_actuals_by_id(actual_records, current.horizon)
            else:
                by_time = D.decode_actuals_by_time(actual_records)
        exs = D.examples(
            decoded,
            current.window,
            current.horizon,
            target_index,
            join_by=s.join_by,
            actuals_by_id=by_id,
            actuals_by_time=by_time,
            from_input=s.actuals_from_input,
            step_s=step_s,
            tolerance_s=tol_s,
        )
        history = {"input_records": len(inputs), "actual_records": n_actuals, "windows": len(exs)}
        if decoded.skipped:
            history["skipped"] = decoded.skipped
        train, hold = D.split(exs, s.holdout, current.horizon)
        if len(hold) < s.holdout or len(train) < s.min_train:
            raise Failure(
                "insufficient_history",
                f"{len(exs)} windows with targets: {len(train)} to train on (at least {s.min_train}) "
                f"and {len(hold)} held out (needs {s.holdout})",
                n_train=len(train),
                n_holdout=len(hold),
                history=history,
            )
        x_tr, y_tr = D.stack(train)
        x_ho, y_ho = D.stack(hold)

        # The serving version on the holdout, exactly as the worker scores it.
        cur = scores(current.predict(x_ho), y_ho)

        # The candidate, trained with the same recipe.
        n_f = len(current.features)
        if recipe["scaler"] == "refit":
            scaler = R.StandardScalerSpec.fit(x_tr.reshape(-1, n_f))
        else:
            scaler = R.StandardScalerSpec.of(current.manifest["scaler"])
        t_spec = (current.manifest.get("target") or {}).get("scaler")
        if recipe["target_scaler"] == "refit" or t_spec is None:
            t_scaler = R.StandardScalerSpec.fit(y_tr.reshape(-1, 1))
        else:
            t_scaler = R.StandardScalerSpec.of(t_spec)
            if len(t_scaler.mean) != 1:
                raise Failure("unsupported_bundle", "a per-step target scaler cannot be kept; use target_scaler = refit")
        xz = scaler.transform(x_tr).reshape(len(train), -1)
        yz = t_scaler.transform(y_tr.reshape(-1, 1)).reshape(y_tr.shape)
        estimator, fit_info = R.fit(recipe, xz, yz)

        # Free-form keys of the serving version carry over; the builder writes its own
        # `built_with`, and `retrained` describes this run.
        metadata = {k: v for k, v in (current.metadata or {}).items() if k not in ("retrained", "built_with")}
        metadata["recipe"] = recipe
        retrained: dict = {
            "from_version": version,
            "request": A.request_summary(request),
            "trained_at": A.now_rfc3339(),
            "n_train": len(train),
            "n_holdout": len(hold),
            "history": history,
            "fit": fit_info,
            "by": f"streamcast_retrainer {__version__}",
        }
        reference = _reference_windows(train)
        check, streamcast_bin = _check_args(s.check, s.streamcast_bin)

        def build(root: Path, new_version: str | None, validation: dict | None, extra: dict) -> Path:
            try:
                return _build(
                    estimator, scaler, t_scaler, reference, root=root, name=name, current=current,
                    version=new_version, validation=validation,
                    metadata={**metadata, "retrained": {**retrained, **extra}}, check=check, streamcast=streamcast_bin,
                )
            except Exception as e:  # streamcast_bundle.BundleError, and what skl2onnx raises
                raise Failure("build", f"the bundle builder refused the candidate: {e}") from e

        # Stage the candidate outside the root, and score the staged bundle itself: what would
        # be served is what is judged.
        candidate_version = _next_version(s.model_root, name)
        with tempfile.TemporaryDirectory(prefix="streamcast-retrain-") as tmp:
            staged = build(Path(tmp), candidate_version, None, {})
            cand = scores(ServedBundle(staged).predict(x_ho), y_ho)

        for who, sc in (("current", cur), ("candidate", cand)):
            if not all(np.isfinite(v) for v in sc.values()):
                raise Failure("non_finite_score", f"the {who} version's holdout scores are not finite: {sc}")
        limit = cur["rmse"] * (1.0 - s.margin)
        facts = {
            "candidate_version": candidate_version,
            "current_rmse": cur["rmse"],
            "candidate_rmse": cand["rmse"],
            "current_mae": cur["mae"],
            "candidate_mae": cand["mae"],
            "margin": s.margin,
            "rule": "candidate_rmse < current_rmse * (1 - margin)",
            "n_holdout": len(hold),
            "n_train": len(train),
            "recipe": recipe,
        }
        if not cand["rmse"] < limit:
            return "retrain_rejected", facts
        holdout = {"current_rmse": cur["rmse"], "candidate_rmse": cand["rmse"], "margin": s.margin}
        # The builder claims the next free version (another writer may have taken ours), writes
        # model.onnx first and bundle.json last in a hidden directory, and renames it into place.
        path = build(s.model_root, None, {"rmse": cand["rmse"], "mae": cand["mae"]}, {"holdout": holdout})
        facts["candidate_version"] = path.name
        facts["path"] = str(path)
        return "retrain_published", facts


def _reference_windows(train: list[D.Example], most: int = 5000) -> np.ndarray:
    """Raw training windows for the builder (drift reference, golden cases, export check): at
    most `most`, spread evenly over the training set."""
    idx = np.unique(np.linspace(0, len(train) - 1, min(most, len(train))).round().astype(int))
    return np.stack([train[i].x for i in idx])


def _next_version(root: Path, name: str) -> str:
    from streamcast_bundle import next_version

    return str(next_version(root, name))


def _check_args(setting: str, streamcast_bin: str | None) -> tuple[bool, str | None]:
    """(check, binary) for the builder: `streamcast models validate` on every bundle before it
    is published, when the binary can be found (`auto`), always (`always`), or never."""
    if setting == "never":
        return False, None
    from streamcast_bundle import BundleError
    from streamcast_bundle.core import find_streamcast

    try:
        return True, find_streamcast(streamcast_bin)
    except BundleError:
        if setting == "always":
            raise
        return False, None


def _build(estimator, scaler, t_scaler, reference, *, root, name, current: ServedBundle, version, validation,
           metadata, check: bool, streamcast: str | None) -> Path:
    from streamcast_bundle import from_sklearn

    return Path(
        from_sklearn(
            estimator,
            scaler.spec(),
            reference,
            root=root,
            name=name,
            features=current.features,
            window=current.window,
            horizon=current.horizon,
            target=current.target,
            target_scaler=t_scaler.spec(),
            version=version,
            frequency=current.frequency,
            validation=validation,
            metadata=metadata,
            check=check,
            streamcast=streamcast,
        )
    )


# ---- logging and the loop ---------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        for k, v in (getattr(record, "fields", {}) or {}).items():
            out[k if k not in out else f"details_{k}"] = v
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in (getattr(record, "fields", {}) or {}).items())
        base = f"{record.levelname:<7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run(settings: Settings, stop=None) -> int:
    """Follows the alerts topic until `stop()` (or, with `once`, until it is caught up)."""
    from confluent_kafka import KafkaError

    from .kafka_io import alert_consumer, read_tail

    r = Retrainer(settings)
    # Outcomes published by earlier runs, so a request is not answered twice even when its
    # offset was not committed (a crash between answering and committing).
    for rec in read_tail(settings, settings.alerts_topic, 1_000_000, settings.read_timeout_s, group_suffix="ledger"):
        try:
            r.on_alert_outcome_only(rec.value)
        except Exception:  # noqa: BLE001
            pass
    consumer = alert_consumer(settings)
    assigned: set[int] = set()
    at_end: set[int] = set()

    def on_assign(_consumer, partitions) -> None:
        assigned.clear()
        assigned.update(p.partition for p in partitions)
        at_end.clear()

    consumer.subscribe([settings.alerts_topic], on_assign=on_assign)
    _log(
        logging.INFO,
        "Retrainer started.",
        model=settings.model_name,
        root=str(settings.model_root),
        alerts=settings.alerts_topic,
        margin=settings.margin,
        history=settings.history,
        holdout=settings.holdout,
        handled=len(r.handled),
    )
    ready = False
    idle_since = time.monotonic()
    try:
        while stop is None or not stop():
            m = consumer.poll(0.5)
            if assigned and not ready:
                ready = True
                idle_since = time.monotonic()
                _log(logging.INFO, "Retrainer ready.", partitions=len(assigned))
            if m is None:
                caught_up = ready and at_end >= assigned
                if settings.once and caught_up and time.monotonic() - idle_since > settings.idle_exit_s:
                    break
                continue
            idle_since = time.monotonic()
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                else:
                    _log(logging.WARNING, "Alerts topic error.", error=str(m.error()))
                continue
            at_end.discard(m.partition())
            r.on_alert(m.value() or b"")
            consumer.commit(message=m, asynchronous=False)
    finally:
        consumer.close()
    _log(logging.INFO, "Retrainer stopped.")
    return 0
