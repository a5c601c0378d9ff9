"""The retrainer without a broker: history is handed in as records, alerts are collected.

    cd python && ../.venv/bin/python -m unittest discover -s streamcast_retrainer/tests -t .

(tests/retrain.rs runs this in `make test`.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

from streamcast_retrainer import alerts as A
from streamcast_retrainer import config as C
from streamcast_retrainer import data as D
from streamcast_retrainer import recipe as R
from streamcast_retrainer.serving import ServedBundle
from streamcast_retrainer.service import Retrainer

from .sim import REPO, stream, tail

SEED_RECIPE = {"kind": "sklearn-mlp", "hidden": [16], "alpha": 0.01, "max_iter": 300, "seed": 0}


def schema_validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads((REPO / "schemas" / "alert.schema.json").read_text()))


class Collect:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, alert: dict) -> None:
        self.sent.append(alert)


def request(version: str = "1", at: str | None = None) -> dict:
    return {
        "kind": "retrain_requested",
        "model": {"name": "co2-mlp", "version": version},
        "variant": "primary",
        "at": at or A.now_rfc3339(),
        "details": {"reason": "performance", "state": "firing", "rmse": 8.0, "mae": 7.9, "count": 200, "threshold": 3.0,
                    "above_for_s": 3.0},
    }


class ServingMatchesTheWorker(unittest.TestCase):
    def test_shipped_golden_cases_are_reproduced(self):
        # Golden cases are what streamcast's own check holds every bundle to (1e-4 relative).
        for d in ["co2-mlp/1", "co2-mlp/2", "co2-gru/1", "co2-quantile/1"]:
            b = ServedBundle(REPO / "models" / d)
            g = b.manifest["golden"]
            got = b.predict_raw(np.array([c["window"] for c in g])).reshape(len(g), -1)
            want = np.array([c["prediction"] for c in g])
            self.assertTrue(np.all(np.abs(got - want) <= 1e-4 * np.maximum(1, np.abs(want))), d)

    def test_quantile_point_is_the_sorted_median(self):
        b = ServedBundle(REPO / "models" / "co2-quantile" / "1")
        w = np.array([c["window"] for c in b.manifest["golden"]])
        raw = b.predict_raw(w)
        np.testing.assert_array_equal(b.predict(w), np.sort(raw, axis=2)[:, :, 1])


class Windows(unittest.TestCase):
    def test_holdout_targets_are_never_training_targets(self):
        inputs, actuals = stream(series=4, events=80, shift_from=10**9, shift=0.0)
        dec = D.decode_inputs(inputs, ["co2", "month_sin", "month_cos"], 24)
        self.assertEqual(dec.skipped, {})
        exs = D.examples(dec, 24, 1, 0, join_by="id", actuals_by_id=D.decode_actuals_by_id(actuals, 1))
        self.assertEqual(len(exs), 4 * (80 - 23))
        train, hold = D.split(exs, 40, 1)
        self.assertEqual(len(hold), 40)
        self.assertEqual(hold, exs[-40:])
        for s in {e.series for e in hold}:
            first = min(e.pos for e in hold if e.series == s)
            self.assertTrue(all(e.pos <= first - 1 for e in train if e.series == s))
        # Both forms of `features` decode to the same numbers, in bundle order.
        self.assertEqual(exs[0].x.shape, (24, 3))

    def test_time_join_and_input_as_truth_agree(self):
        inputs, actuals = stream(series=2, events=60, shift_from=10**9, shift=0.0)
        # Time-addressed actuals: the truth of week t+1 carries week t+1's timestamp.
        by_time = D.decode_actuals_by_time(actuals)
        dec = D.decode_inputs(inputs, ["co2", "month_sin", "month_cos"], 24)
        step = 7 * 86400.0
        a = D.examples(dec, 24, 1, 0, join_by="time", actuals_by_time=by_time, step_s=step)
        b = D.examples(dec, 24, 1, 0, join_by="time", from_input=True, step_s=step)
        self.assertGreater(len(a), 60)
        # The input stream lacks the week after its last event, so it has one window fewer per series.
        self.assertEqual(len(a) - len(b), 2)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.y, y.y)

    def test_a_window_across_a_missing_step_is_not_used(self):
        inputs, _ = stream(series=1, events=80, shift_from=10**9, shift=0.0)
        gapped = inputs[:30] + inputs[31:]
        dec = D.decode_inputs(gapped, ["co2", "month_sin", "month_cos"], 24)
        exs = D.examples(dec, 24, 1, 0, join_by="time", from_input=True, step_s=7 * 86400.0)
        # Week 30 is missing: windows end at 23..28 (29's target is week 30) and again from 54
        # (the first full window after the gap) to 78 (79's target is not in the stream).
        self.assertEqual(sorted(e.pos for e in exs), list(range(23, 29)) + list(range(54, 79)))


class Recipes(unittest.TestCase):
    def test_defaults_override_and_typos(self):
        r = R.effective({"kind": "sklearn-mlp", "hidden": [8]}, {"max_iter": 1})
        self.assertEqual((r["hidden"], r["max_iter"], r["scaler"]), ([8], 1, "refit"))
        with self.assertRaises(R.RecipeError):
            R.effective({"kind": "sklearn-mlp", "hiden": [8]})
        with self.assertRaises(R.RecipeError):
            R.effective(None)
        self.assertEqual(R.effective(None, {"kind": "sklearn-ridge"})["alpha"], 1.0)


class Settings(unittest.TestCase):
    def test_flags_env_and_worker_config(self):
        with tempfile.TemporaryDirectory() as tmp:
            toml = Path(tmp) / "streamcast.toml"
            toml.write_text(
                '[kafka]\n"bootstrap.servers" = "k:9092"\n"security.protocol" = "SASL_SSL"\n'
                '[topics]\nalerts = "al"\ninput = "in"\n[model]\nroot = "m"\nname = "x"\n'
                '[monitor]\njoin_by = "time"\nactuals_from_input = true\n'
            )
            s = C.parse(["--config", str(toml), "--margin", "0.1"], {"STREAMCAST_RETRAINER_HOLDOUT": "50",
                                                                     "STREAMCAST_KAFKA__SASL_MECHANISM": "PLAIN"})
            self.assertEqual((s.bootstrap_servers, s.alerts_topic, s.input_topic, s.model_name), ("k:9092", "al", "in", "x"))
            self.assertEqual(s.model_root, Path("m"))  # relative to the working directory, as the worker has it
            self.assertEqual((s.margin, s.holdout, s.join_by, s.actuals_from_input), (0.1, 50, "time", True))
            self.assertEqual(s.kafka, {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"})
        self.assertEqual(C.parse(["--once", "--recipe-override", '{"max_iter": 1}'], {}).recipe_override, {"max_iter": 1})
        self.assertEqual(C.parse_duration("1h 30m"), 5400.0)


class EndToEndWithoutBroker(unittest.TestCase):
    """The decision itself, on a demo-like stream: co2 shifted by one training std."""

    root: Path

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.seed = Path(cls.tmp.name) / "seed"
        out = subprocess.run(
            [sys.executable, str(REPO / "python" / "examples" / "retrainer_seed.py"), "--root", str(cls.seed),
             "--rows", "0:1600", "--recipe", json.dumps(SEED_RECIPE)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "python")},
        )
        cls.seed_info = json.loads(out.stdout.strip().splitlines()[-1])
        cls.shift = json.loads((cls.seed / "co2-mlp" / "1" / "bundle.json").read_text())["scaler"]["std"][0]
        cls.schema = schema_validator()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def retrainer(self, shift: float, **settings) -> tuple[Retrainer, Collect, Path]:
        root = Path(tempfile.mkdtemp(dir=self.tmp.name))
        shutil.copytree(self.seed / "co2-mlp", root / "co2-mlp")
        inputs, actuals = stream(series=6, events=200, shift_from=40, shift=shift)
        # The newest 900 records: the last 150 weeks of each series, all shifted.
        s = C.Settings(model_root=root, model_name="co2-mlp", history=900, holdout=120, min_train=200, **settings)
        sink = Collect()
        r = Retrainer(s, producer=sink, history_reader=lambda t: tail(inputs if t == s.input_topic else actuals, 900))
        return r, sink, root

    def assert_valid(self, alert: dict) -> None:
        errors = [e.message for e in self.schema.iter_errors(alert)]
        self.assertEqual(errors, [], alert)

    def test_a_better_version_is_published_once(self):
        r, sink, root = self.retrainer(self.shift)
        req = request()
        out = r.on_alert(json.dumps(req).encode())
        self.assertEqual(out["kind"], "retrain_published", out)
        self.assert_valid(out)
        d = out["details"]
        self.assertLess(d["candidate_rmse"], d["current_rmse"] * 0.95)
        self.assertEqual((d["candidate_version"], d["request"]["at"]), ("2", req["at"]))
        b = json.loads((root / "co2-mlp" / "2" / "bundle.json").read_text())
        self.assertEqual(b["metadata"]["recipe"], R.effective(SEED_RECIPE))
        self.assertEqual(b["metadata"]["retrained"]["from_version"], "1")
        self.assertAlmostEqual(b["validation"]["rmse"], d["candidate_rmse"], places=6)
        # The same request again (a re-read, or a copy): nothing more.
        self.assertIsNone(r.on_alert(json.dumps(req).encode()))
        # A later request about version 1 is moot: version 2 exists.
        self.assertIsNone(r.on_alert(json.dumps(request()).encode()))
        self.assertEqual(len(sink.sent), 1)
        self.assertEqual(sorted(p.name for p in (root / "co2-mlp").iterdir()), ["1", "2"])

    def test_a_worse_version_is_rejected_with_both_scores(self):
        r, sink, root = self.retrainer(self.shift, recipe_override={"max_iter": 1, "hidden": [1]})
        out = r.on_alert(json.dumps(request()).encode())
        self.assertEqual(out["kind"], "retrain_rejected", out)
        self.assert_valid(out)
        self.assertGreater(out["details"]["candidate_rmse"], out["details"]["current_rmse"])
        self.assertEqual(sorted(p.name for p in (root / "co2-mlp").iterdir()), ["1"])
        # A restarted retrainer that reads its earlier outcome back does not retrain again.
        again, sink2, _ = self.retrainer(self.shift)
        again.s.model_root = root
        again.on_alert_outcome_only(json.dumps(out).encode())
        req = {**request(), "at": out["details"]["request"]["at"]}
        self.assertIsNone(again.on_alert(json.dumps(req).encode()))
        self.assertEqual(sink2.sent, [])

    def test_too_little_history_is_a_failure_alert(self):
        r, sink, root = self.retrainer(self.shift, )
        r.s.holdout = 5000
        out = r.on_alert(json.dumps(request()).encode())
        self.assertEqual((out["kind"], out["details"]["reason"]), ("retrain_failed", "insufficient_history"))
        self.assert_valid(out)

    def test_other_models_kinds_and_stale_requests_are_ignored(self):
        r, sink, _ = self.retrainer(self.shift)
        other = request()
        other["model"]["name"] = "another"
        self.assertIsNone(r.on_alert(json.dumps(other).encode()))
        self.assertIsNone(r.on_alert(b"not json"))
        self.assertIsNone(r.on_alert(json.dumps({**request(), "kind": "feature_drift"}).encode()))
        self.assertIsNone(r.on_alert(json.dumps(request(at="2020-01-01T00:00:00Z")).encode()))
        self.assertEqual(sink.sent, [])


class TheSchema(unittest.TestCase):
    def test_outcomes_without_their_numbers_fail(self):
        v = schema_validator()
        base = {"kind": "retrain_rejected", "model": {"name": "m", "version": "1"}, "variant": "primary",
                "at": "2026-01-01T00:00:00Z",
                "details": {"candidate_version": "2", "current_rmse": 1.0, "candidate_rmse": 2.0, "margin": 0.05,
                            "n_holdout": 10, "request": {"at": "2026-01-01T00:00:00Z", "version": "1", "reason": "performance"}}}
        self.assertEqual(list(v.iter_errors(base)), [])
        for key in ("current_rmse", "candidate_rmse", "candidate_version", "request"):
            bad = json.loads(json.dumps(base))
            del bad["details"][key]
            self.assertNotEqual(list(v.iter_errors(bad)), [], key)
        # Other kinds keep free-form details.
        self.assertEqual(list(v.iter_errors({**base, "kind": "feature_drift", "details": {}})), [])


if __name__ == "__main__":
    unittest.main()


class Superseded(unittest.TestCase):
    def test_only_a_version_published_for_this_request_answers_it(self):
        from streamcast_retrainer.service import answered_by, version_key

        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        request = {"kind": "retrain_requested", "model": {"name": "m", "version": "1"}, "at": "2026-12-03T10:00:00Z"}

        def publish(version, asked):
            d = root / "m" / version
            d.mkdir(parents=True)
            meta = {"retrained": {"request": asked}} if asked else {}
            (d / "bundle.json").write_text(json.dumps({"metadata": meta}))

        publish("2", None)  # an operator's version
        publish("3", {"at": "2026-12-03T09:00:00Z", "version": "1"})  # an earlier episode
        self.assertIsNone(answered_by(root, "m", ["2", "3"], request))
        publish("4", {"at": "2026-12-03T10:00:00Z", "version": "1"})
        self.assertEqual(answered_by(root, "m", ["2", "3", "4"], request), "4")
        # streamcast's order, not Python's string order.
        self.assertEqual(sorted(["10", "9", "1.10", "1.9"], key=version_key), ["1.9", "1.10", "9", "10"])
