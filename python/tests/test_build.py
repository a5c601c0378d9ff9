"""Building bundles: files, versions, golden cases, and the errors users meet first.

Tests that run `streamcast models validate` use $STREAMCAST_BIN or the repository's
target/release/streamcast, and are skipped when neither exists.
"""

import hashlib
import json
import stat
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamcast_bundle import BundleError, from_sklearn, next_version, validate
from streamcast_bundle import core

try:
    import sklearn  # noqa: F401

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover
    HAVE_SKLEARN = False

try:
    STREAMCAST = core.find_streamcast()
except BundleError:  # pragma: no cover
    STREAMCAST = None

FEATURES = ["a", "b"]
T, F = 4, 2


def series(n=400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = 50 + 0.02 * t + np.sin(t / 5) + 0.1 * rng.normal(size=n)
    b = np.cos(t / 7) * 3
    return np.stack([a, b], axis=1)


def make_windows(raw, t=T, h=1):
    starts = np.arange(len(raw) - t - h + 1)
    x = np.stack([raw[s : s + t] for s in starts])
    y = np.stack([raw[s + t : s + t + h, 0] for s in starts])
    return x, y


class Tmp(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name) / "models"

    def tearDown(self):
        self._tmp.cleanup()


class NextVersionTest(Tmp):
    def test_first_and_next(self):
        self.assertEqual(next_version(self.root, "m"), "1")
        for v in ("1", "2", "10", "1.5", ".build-1"):
            (self.root / "m" / v).mkdir(parents=True)
        self.assertEqual(next_version(self.root, "m"), "11")
        # streamcast's `latest` ranks v3 above 10 (byte order outside digit runs): an automatic
        # "11" would never be served, so the builder refuses to guess.
        (self.root / "m" / "v3").mkdir()
        with self.assertRaisesRegex(BundleError, "v3"):
            next_version(self.root, "m")


@unittest.skipUnless(HAVE_SKLEARN, "needs scikit-learn and skl2onnx")
class FromSklearnTest(Tmp):
    def fit_ridge_pipeline(self, h=3):
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import MinMaxScaler, StandardScaler

        x, y = make_windows(series(), h=h)
        # No bundle scaler: the pipeline normalizes inside the graph; a MinMax target scaler over
        # all `h` steps with a non-default range.
        target_scaler = MinMaxScaler(feature_range=(-1, 1)).fit(y)
        model = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=1e-3))])
        model.fit(x.reshape(len(x), -1), target_scaler.transform(y))
        return model, x, y, target_scaler

    def test_a_pipeline_with_a_linear_model_and_horizon_3(self):
        model, x, y, target_scaler = self.fit_ridge_pipeline()
        d = from_sklearn(
            model, None, x, root=self.root, name="ridge", features=FEATURES, window=T, horizon=3,
            target_scaler=target_scaler, golden=4, reference_size=50, validation={"rmse": 0.5, "mae": 0.25},
            metadata={"recipe": "unit test"}, check=STREAMCAST is not None,
        )
        self.assertEqual(d, self.root / "ridge" / "1")
        b = json.loads((d / "bundle.json").read_text())
        self.assertEqual(b["model_sha256"], hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest())
        self.assertEqual(b["version"], "1")
        self.assertEqual(b["target"]["name"], "a")
        self.assertEqual(b["scaler"], {"kind": "standard", "mean": [0.0, 0.0], "std": [1.0, 1.0]})
        self.assertEqual(b["target"]["scaler"]["kind"], "minmax")
        self.assertEqual(len(b["target"]["scaler"]["min"]), 3)
        self.assertEqual(b["input"], {"name": "input", "layout": "flat"})
        self.assertEqual(len(b["golden"]), 4)
        self.assertEqual(len(b["reference"]["features"]["a"]), 50)
        self.assertEqual(len(b["reference"]["predictions"]), 50)
        self.assertEqual(b["validation"], {"rmse": 0.5, "mae": 0.25})
        self.assertEqual(b["metadata"]["recipe"], "unit test")
        self.assertIn("scikit-learn", json.dumps(b["metadata"]["built_with"]))
        # Golden predictions are scikit-learn's on exactly the written windows.
        for g in b["golden"]:
            w = np.array(g["window"])
            want = target_scaler.inverse_transform(model.predict(w.reshape(1, -1).astype(np.float32)))
            np.testing.assert_allclose(g["prediction"], want[0], rtol=1e-8)
        # The reference sample is the windows' newest rows.
        self.assertEqual(b["reference"]["features"]["a"][0], float(f"{x[0, -1, 0]:.9g}"))
        self.assertEqual(b["reference"]["features"]["b"][-1], float(f"{x[-1, -1, 1]:.9g}"))
        # Another build takes the next version; an explicit existing one is refused.
        d2 = from_sklearn(model, None, x, root=self.root, name="ridge", features=FEATURES, window=T, horizon=3,
                          target_scaler=target_scaler, check=False)
        self.assertEqual(d2.name, "2")
        with self.assertRaisesRegex(BundleError, "already exists"):
            from_sklearn(model, None, x, root=self.root, name="ridge", features=FEATURES, window=T, horizon=3,
                         target_scaler=target_scaler, version="2", check=False)
        self.assertEqual(sorted(p.name for p in (self.root / "ridge").iterdir()), ["1", "2"])

    def test_an_mlp_with_several_outputs_keeps_its_width(self):
        from sklearn.neural_network import MLPRegressor
        from sklearn.preprocessing import MinMaxScaler, StandardScaler

        x, y = make_windows(series(), h=2)
        scaler = MinMaxScaler(feature_range=(-2, 5)).fit(x.reshape(-1, F))
        target_scaler = StandardScaler().fit(y[:, :1])
        z = scaler.transform(x.reshape(-1, F)).reshape(len(x), -1)
        model = MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(z, (y - target_scaler.mean_) / target_scaler.scale_)
        d = from_sklearn(model, scaler, x, root=self.root, name="mlp", features=FEATURES, window=T, horizon=2,
                         target_scaler=target_scaler, version="7", check=STREAMCAST is not None)
        b = json.loads((d / "bundle.json").read_text())
        self.assertEqual(b["version"], "7")
        self.assertEqual(b["scaler"]["kind"], "minmax")
        m = onnx.load(str(d / "model.onnx"))
        dims = [dd.dim_value or dd.dim_param for dd in m.graph.output[0].type.tensor_type.shape.dim]
        self.assertEqual(dims[1], 2)
        self.assertTrue(all(len(g["prediction"]) == 2 for g in b["golden"]))

    def test_a_pipeline_ending_in_an_mlp_with_several_outputs(self):
        import warnings

        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = make_windows(series(), h=3)
        model = Pipeline([("scale", StandardScaler()), ("mlp", MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, random_state=0))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x.reshape(len(x), -1), (y - 50.0) / 5.0)
        d = from_sklearn(model, None, x, root=self.root, name="pipe", features=FEATURES, window=T, horizon=3,
                         target_scaler={"kind": "standard", "mean": [50.0], "std": [5.0]}, golden=2,
                         check=STREAMCAST is not None)
        b = json.loads((d / "bundle.json").read_text())
        self.assertEqual(b["metadata"]["built_with"]["framework"]["estimator"], "MLPRegressor")
        for g in b["golden"]:
            want = model.predict(np.array(g["window"]).reshape(1, -1).astype(np.float32))[0] * 5.0 + 50.0
            np.testing.assert_allclose(g["prediction"], want, rtol=1e-8)

    def test_input_errors_name_the_problem(self):
        model, x, _, ts = self.fit_ridge_pipeline()
        kw = dict(root=self.root, name="m", features=FEATURES, window=T, horizon=3, target_scaler=ts, check=False)
        with self.assertRaisesRegex(BundleError, r"X_reference must be 3-D raw windows \[n, window, features\] = \[n, 4, 2\]; got shape \[\d+, 8\]"):
            from_sklearn(model, None, x.reshape(len(x), -1), **kw)
        with self.assertRaisesRegex(BundleError, r"X_reference has dtype <U"):
            from_sklearn(model, None, x.astype(str), **kw)
        with self.assertRaisesRegex(BundleError, r"X_reference has shape \[\d+, 4, 3\]"):
            from_sklearn(model, None, np.zeros((5, 4, 3)), **kw)
        with self.assertRaisesRegex(BundleError, r"X_reference\[2\] holds a non-finite value"):
            bad = x[:5].copy()
            bad[2, 1, 0] = np.nan
            from_sklearn(model, None, bad, **kw)
        with self.assertRaisesRegex(BundleError, r"fitted on 8 inputs; window 5 x 2 features flattened time-major is 10"):
            from_sklearn(model, None, x, **{**kw, "window": 5})
        with self.assertRaisesRegex(BundleError, r"target_scaler has 3 columns; expected 1 or 2"):
            from_sklearn(model, None, x, **{**kw, "horizon": 2})
        with self.assertRaisesRegex(BundleError, r"features: `a` is listed twice"):
            from_sklearn(model, None, x, **{**kw, "features": ["a", "a"]})
        with self.assertRaisesRegex(BundleError, r"name 'a/b' must match"):
            from_sklearn(model, None, x, **{**kw, "name": "a/b"})
        self.assertFalse((self.root / "m").exists() and any((self.root / "m").iterdir()))

    def test_a_failing_validation_raises_its_stderr_and_publishes_nothing(self):
        model, x, _, ts = self.fit_ridge_pipeline()
        stub = Path(self._tmp.name) / "streamcast"
        stub.write_text("#!/bin/sh\necho 'bundle: golden case 0 step 1: expected 1, model gives 2' >&2\nexit 2\n")
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
        with self.assertRaisesRegex(BundleError, r"(?s)exit 2.*golden case 0 step 1"):
            from_sklearn(model, None, x, root=self.root, name="m", features=FEATURES, window=T, horizon=3,
                         target_scaler=ts, streamcast=str(stub))
        self.assertEqual(list((self.root / "m").iterdir()), [])


class ExportCheckTest(Tmp):
    """An export that changes the numbers is caught before anything is written."""

    def model(self, w):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["input", "W"], ["output"])],
            "g",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", T * F])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1])],
            [numpy_helper.from_array(w.astype(np.float32), "W")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)

    def build(self, export_w, check=False):
        w = np.linspace(-0.2, 0.2, T * F).reshape(-1, 1)
        x, _ = make_windows(series())
        return core.build(
            framework="numpy", export=lambda _: self.model(export_w), predict=lambda z: z.reshape(len(z), -1) @ w,
            layout="flat", scaler={"kind": "standard", "mean": [50.0, 0.0], "std": [5.0, 2.0]}, X_reference=x,
            root=self.root, name="np", features=FEATURES, window=T, horizon=1, target=None,
            target_scaler={"kind": "standard", "mean": [50.0], "std": [5.0]}, version=None, golden=3,
            reference_size=100, frequency="1h", validation=None, metadata=None, streamcast=None, check=check,
            max_batch_size=64, built_with={"name": "numpy"},
        )

    def test_a_faithful_export_builds(self):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            self.skipTest("needs onnxruntime")
        w = np.linspace(-0.2, 0.2, T * F).reshape(-1, 1)
        d = self.build(w, check=STREAMCAST is not None)
        b = json.loads((d / "bundle.json").read_text())
        self.assertEqual(b["frequency"], "1h")
        self.assertLess(b["metadata"]["built_with"]["export_max_abs_error"], 1e-4)

    def test_an_unfaithful_export_is_refused(self):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            self.skipTest("needs onnxruntime")
        w = np.linspace(-0.2, 0.2, T * F).reshape(-1, 1)
        with self.assertRaisesRegex(BundleError, r"does not reproduce numpy: window \d+ of X_reference, step 1"):
            self.build(w + 0.01)
        self.assertFalse((self.root / "np").exists() and any((self.root / "np").iterdir()))

    def test_a_fixed_batch_export_is_refused(self):
        w = np.linspace(-0.2, 0.2, T * F).reshape(-1, 1)
        m = self.model(w)
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
        x, _ = make_windows(series())
        with self.assertRaisesRegex(BundleError, r"fixed batch axis \(1\)"):
            core.build(
                framework="numpy", export=lambda _: m, predict=lambda z: z.reshape(len(z), -1) @ w, layout="flat",
                scaler=None, X_reference=x, root=self.root, name="np", features=FEATURES, window=T, horizon=1,
                target=None, target_scaler=None, version=None, golden=1, reference_size=10, frequency=None,
                validation=None, metadata=None, streamcast=None, check=False, max_batch_size=8, built_with={},
            )


@unittest.skipUnless(STREAMCAST, "needs the streamcast binary")
class ValidateTest(Tmp):
    def test_the_shipped_bundle_validates_and_a_tampered_model_is_refused(self):
        shipped = Path(__file__).resolve().parents[2] / "models" / "co2-mlp" / "1"
        if not shipped.is_dir():
            self.skipTest("not in the streamcast repository")
        validate(shipped, max_batch_size=8)
        d = self.root / "co2-mlp" / "1"
        d.mkdir(parents=True)
        b = json.loads((shipped / "bundle.json").read_text())
        b["model_sha256"] = "0" * 64
        (d / "bundle.json").write_text(json.dumps(b))
        (d / "model.onnx").write_bytes((shipped / "model.onnx").read_bytes())
        with self.assertRaisesRegex(BundleError, "does not match bundle.json's model_sha256"):
            validate(d)


if __name__ == "__main__":
    unittest.main()
