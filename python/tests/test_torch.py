"""from_torch on small modules (skipped without PyTorch; `make test-torch` runs them)."""

import json
import tempfile
import unittest
from pathlib import Path

import numpy as np

from streamcast_bundle import BundleError, core, from_torch

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - .venv has no torch
    torch = None

try:
    STREAMCAST = core.find_streamcast()
except BundleError:  # pragma: no cover
    STREAMCAST = None

T, F = 5, 2


def windows(n=120):
    t = np.arange(n + T)
    raw = np.stack([10 + np.sin(t / 3), np.cos(t / 4)], axis=1)
    return np.stack([raw[i : i + T] for i in range(n)])


@unittest.skipIf(torch is None, "needs PyTorch")
class FromTorchTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        torch.manual_seed(0)

    def tearDown(self):
        self._tmp.cleanup()

    def test_a_flat_float64_module_is_exported_in_float32(self):
        module = nn.Sequential(nn.Linear(T * F, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        scaler = {"kind": "minmax", "min": [9.0, -1.0], "max": [11.0, 1.0]}
        d = from_torch(module, scaler, windows(), layout="flat", root=self.root, name="lin", features=["y", "x"],
                       window=T, horizon=3, golden=3, check=STREAMCAST is not None)
        b = json.loads((d / "bundle.json").read_text())
        self.assertEqual(b["input"]["layout"], "flat")
        self.assertEqual(next(module.parameters()).dtype, torch.float64, "the caller's module is not changed")
        m32 = module.float().eval()
        for g in b["golden"]:
            w = np.array(g["window"])
            z = ((w - [9.0, -1.0]) / [2.0, 2.0]).astype(np.float32).reshape(1, -1)
            with torch.no_grad():
                want = m32(torch.from_numpy(z)).numpy()[0]
            np.testing.assert_allclose(g["prediction"], want, rtol=1e-6, atol=1e-6)

    def test_a_module_with_the_wrong_output_shape_is_refused(self):
        class Last(nn.Module):
            def forward(self, x):
                return x[:, -1, 0]  # [N], not [N, horizon]

        with self.assertRaisesRegex(BundleError, r"returns shape \[\d+\] for \d+ windows; expected \[N, horizon\] = \[\d+, 2\]"):
            from_torch(Last(), None, windows(), root=self.root, name="bad", features=["y", "x"], window=T,
                       horizon=2, check=False)
        self.assertFalse(any((self.root / "bad").glob("*")) if (self.root / "bad").exists() else False)

    def test_not_a_module_is_refused(self):
        with self.assertRaisesRegex(BundleError, "must be a torch.nn.Module"):
            from_torch(lambda x: x, None, windows(), root=self.root, name="m", features=["y", "x"], window=T)


if __name__ == "__main__":
    unittest.main()
