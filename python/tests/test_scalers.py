"""Scaler conversion: the bundle spec must be the fitted scaler's own affine map."""

import unittest

import numpy as np

from streamcast_bundle import BundleError, scaler_spec
from streamcast_bundle.scalers import convert

try:
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler
except ImportError:  # pragma: no cover - the package works without scikit-learn
    StandardScaler = None


def spec_transform(spec, x):
    """The bundle formula in float64 (src/normalize.rs, before its float32 cast)."""
    if spec["kind"] == "standard":
        return (x - np.array(spec["mean"])) / np.array(spec["std"])
    lo, hi = np.array(spec["min"]), np.array(spec["max"])
    return (x - lo) / (hi - lo)


def spec_inverse(spec, z):
    if spec["kind"] == "standard":
        return z * np.array(spec["std"]) + np.array(spec["mean"])
    lo, hi = np.array(spec["min"]), np.array(spec["max"])
    return z * (hi - lo) + lo


def worker_transform(spec, x):
    """What the worker computes: float32 offset, scale and 1/scale, float32 arithmetic."""
    if spec["kind"] == "standard":
        off, scale = np.array(spec["mean"]), np.array(spec["std"])
    else:
        off = np.array(spec["min"])
        scale = np.array(spec["max"]) - off
    off32, inv32 = off.astype(np.float32), (np.float32(1) / scale.astype(np.float32))
    return (x.astype(np.float32) - off32) * inv32


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal([350.0, 0.0, -20.0], [12.0, 0.7, 0.01], size=(300, 3))


@unittest.skipIf(StandardScaler is None, "needs scikit-learn")
class StandardScalerTest(unittest.TestCase):
    def test_parameters_are_mean_and_scale_exactly(self):
        x = data()
        s = StandardScaler().fit(x)
        spec = scaler_spec(s)
        self.assertEqual(spec["kind"], "standard")
        self.assertEqual(spec["mean"], s.mean_.tolist())
        self.assertEqual(spec["std"], s.scale_.tolist())
        # The same float64 operations as scikit-learn: bit-for-bit equal.
        np.testing.assert_array_equal(spec_transform(spec, x), s.transform(x))
        np.testing.assert_allclose(spec_inverse(spec, s.transform(x)), x, rtol=1e-15, atol=0)
        np.testing.assert_allclose(worker_transform(spec, x), s.transform(x), rtol=0, atol=2e-4)

    def test_without_mean_or_std(self):
        x = data(1)
        for kw in ({"with_mean": False}, {"with_std": False}):
            s = StandardScaler(**kw).fit(x)
            spec = scaler_spec(s)
            np.testing.assert_allclose(spec_transform(spec, x), s.transform(x), rtol=1e-15, atol=1e-15)

    def test_wrong_number_of_columns_is_named(self):
        s = StandardScaler().fit(data()[:, :2])
        with self.assertRaisesRegex(BundleError, r"scaler has 2 columns; expected 3"):
            convert(s, (3,), "scaler")
        t = StandardScaler().fit(data()[:, :2])
        with self.assertRaisesRegex(BundleError, r"target_scaler has 2 columns; expected 1 or 4"):
            convert(t, (1, 4), "target_scaler")

    def test_unfitted_and_unsupported_scalers_are_refused(self):
        with self.assertRaisesRegex(BundleError, "not fitted"):
            scaler_spec(StandardScaler())
        with self.assertRaisesRegex(BundleError, "RobustScaler is not supported"):
            scaler_spec(RobustScaler().fit(data()))
        with self.assertRaisesRegex(BundleError, "not supported"):
            scaler_spec(object())


@unittest.skipIf(StandardScaler is None, "needs scikit-learn")
class MinMaxScalerTest(unittest.TestCase):
    def test_default_range_is_the_data_range(self):
        x = data()
        s = MinMaxScaler().fit(x)
        spec = scaler_spec(s)
        self.assertEqual(spec["kind"], "minmax")
        self.assertEqual(spec["min"], s.data_min_.tolist())
        np.testing.assert_allclose(spec["max"], s.data_max_, rtol=1e-15)
        np.testing.assert_allclose(spec_transform(spec, x), s.transform(x), rtol=1e-12, atol=1e-12)

    def test_a_non_default_feature_range_converts_exactly(self):
        x = data(2)
        s = MinMaxScaler(feature_range=(-1.0, 2.0)).fit(x[:200])
        spec = scaler_spec(s)
        # The bundle's [min, max] is the x-range that maps onto [0, 1]: the data's min maps to -1,
        # so [min, max] is the second third of the data's range.
        third = s.data_range_ / 3
        np.testing.assert_allclose(spec["min"], s.data_min_ + third, rtol=1e-14)
        np.testing.assert_allclose(spec["max"], s.data_min_ + 2 * third, rtol=1e-14)
        for probe in (x, x[200:] * 1.5, s.data_min_[None], s.data_max_[None]):
            np.testing.assert_allclose(spec_transform(spec, probe), s.transform(probe), rtol=1e-12, atol=1e-12)
            z = s.transform(probe)
            np.testing.assert_allclose(spec_inverse(spec, z), s.inverse_transform(z), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(spec_transform(spec, s.data_min_[None]), [[-1.0] * 3], atol=1e-12)
        np.testing.assert_allclose(spec_transform(spec, s.data_max_[None]), [[2.0] * 3], atol=1e-12)
        np.testing.assert_allclose(worker_transform(spec, x), s.transform(x), rtol=0, atol=1e-4)

    def test_a_constant_column_maps_as_scikit_learn_maps_it(self):
        x = data(3)
        x[:, 1] = 4.0
        s = MinMaxScaler(feature_range=(0.5, 3.0)).fit(x)
        spec = scaler_spec(s)
        probe = np.vstack([x[:5], x[:5] + 1.0])
        np.testing.assert_allclose(spec_transform(spec, probe), s.transform(probe), rtol=1e-12, atol=1e-12)

    def test_clip_is_refused(self):
        with self.assertRaisesRegex(BundleError, "clip=True"):
            scaler_spec(MinMaxScaler(clip=True).fit(data()))


@unittest.skipIf(StandardScaler is None, "needs scikit-learn")
class ConversionGuardTest(unittest.TestCase):
    def test_a_conversion_that_is_off_by_a_thousandth_is_caught(self):
        from streamcast_bundle.scalers import Scaler, check_exact

        x = data()
        s = StandardScaler().fit(x)
        good = convert(s, (3,))
        check_exact(good, x, "scaler")
        spec = dict(good.spec, std=[v * 1.001 for v in good.spec["std"]])
        with self.assertRaisesRegex(BundleError, r"scaler: the converted standard scaler differs from StandardScaler.transform"):
            check_exact(Scaler(spec, s), x, "scaler")
        m = MinMaxScaler(feature_range=(-1, 2)).fit(x)
        check_exact(convert(m, (3,)), x, "scaler")
        spec = dict(scaler_spec(m), min=[v + 1e-6 for v in scaler_spec(m)["min"]])
        with self.assertRaisesRegex(BundleError, "differs from MinMaxScaler"):
            check_exact(Scaler(spec, m), x, "scaler")


class DictAndIdentityTest(unittest.TestCase):
    def test_a_bundle_dict_is_taken_as_is(self):
        spec = {"kind": "minmax", "min": [0, 1], "max": [2, 3]}
        self.assertEqual(scaler_spec(spec), {"kind": "minmax", "min": [0.0, 1.0], "max": [2.0, 3.0]})

    def test_bad_dicts_name_the_problem(self):
        with self.assertRaisesRegex(BundleError, r"column 1 has std = 0.0"):
            scaler_spec({"kind": "standard", "mean": [0, 0], "std": [1, 0]})
        with self.assertRaisesRegex(BundleError, r"max - min"):
            scaler_spec({"kind": "minmax", "min": [1], "max": [1]})
        with self.assertRaisesRegex(BundleError, r"mean\[0\] is nan"):
            scaler_spec({"kind": "standard", "mean": [float("nan")], "std": [1]})
        with self.assertRaisesRegex(BundleError, "kind"):
            scaler_spec({"kind": "robust", "center": [0], "scale": [1]})

    def test_none_is_the_identity(self):
        s = convert(None, (3,), identity_columns=3)
        self.assertEqual(s.spec, {"kind": "standard", "mean": [0.0] * 3, "std": [1.0] * 3})
        x = data()
        np.testing.assert_array_equal(s.transform(x), x)

    def test_a_one_column_target_scaler_covers_every_step(self):
        s = convert({"kind": "standard", "mean": [100.0], "std": [2.0]}, (1, 4), "target_scaler")
        np.testing.assert_array_equal(s.inverse(np.array([[0.0, 1.0, -1.0, 0.5]])), [[100.0, 102.0, 98.0, 101.0]])


if __name__ == "__main__":
    unittest.main()
