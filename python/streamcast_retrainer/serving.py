"""A bundle scored the way the streamcast worker scores it.

`src/normalize.rs` and `src/inference/`: each raw value is read as an f32; normalization is
`(x - offset) * (1 / scale)` in f32, per feature (`standard`: offset = mean, scale = std;
`minmax`: offset = min, scale = max - min); the input is `[N, T*F]` time-major (`flat`) or
`[N, T, F]` (`sequence`); the output is de-normalized in f32 as `y * scale + offset`, a
one-column target scaler applying to every value. A quantile bundle's output `[N, H, Q]` is
sorted per step (the worker's monotone rearrangement) and its point forecast is the 0.5 level.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _offset_scale(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    if spec["kind"] == "standard":
        offset, scale = np.asarray(spec["mean"], np.float64), np.asarray(spec["std"], np.float64)
    elif spec["kind"] == "minmax":
        lo, hi = np.asarray(spec["min"], np.float64), np.asarray(spec["max"], np.float64)
        offset, scale = lo, hi - lo
    else:
        raise ValueError(f"unknown scaler kind {spec['kind']!r}")
    return offset.astype(np.float32), scale.astype(np.float32)


class ServedBundle:
    """One bundle directory (`bundle.json` + `model.onnx`), on ONNX Runtime's CPU provider."""

    def __init__(self, directory: Path) -> None:
        import onnxruntime as ort

        self.dir = Path(directory)
        self.manifest = json.loads((self.dir / "bundle.json").read_text(encoding="utf-8"))
        m = self.manifest
        self.name, self.version = m["name"], str(m["version"])
        self.features: list[str] = list(m["features"])
        self.window = int(m.get("window", 1))
        self.horizon = int(m.get("horizon", 1))
        self.layout = (m.get("input") or {}).get("layout", "flat")
        self.input_name = (m.get("input") or {}).get("name", "input")
        self.output_name = (m.get("output") or {}).get("name", "output")
        self.quantiles = m.get("quantiles")
        self.target = (m.get("target") or {}).get("name")
        self.frequency = m.get("frequency")
        self.frequency_tolerance = m.get("frequency_tolerance")
        self.metadata = m.get("metadata") or {}
        self.offset, self.scale = _offset_scale(m["scaler"])
        self.inv_scale = (np.float32(1.0) / self.scale).astype(np.float32)
        target_scaler = (m.get("target") or {}).get("scaler")
        self.t_offset, self.t_scale = _offset_scale(target_scaler) if target_scaler else (None, None)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        model_bytes = (self.dir / "model.onnx").read_bytes()
        self.session = ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])

    def _denormalize(self, y: np.ndarray) -> np.ndarray:
        if self.t_offset is None:
            return y
        if len(self.t_offset) == 1:
            return (y * self.t_scale[0] + self.t_offset[0]).astype(np.float32)
        flat = y.reshape(-1, len(self.t_offset))
        return (flat * self.t_scale + self.t_offset).astype(np.float32).reshape(y.shape)

    def predict_raw(self, windows: np.ndarray, batch: int = 1024) -> np.ndarray:
        """De-normalized model output for raw windows [N, T, F]: [N, H] (or [N, H, Q])."""
        x = np.asarray(windows, dtype=np.float64).astype(np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.window, len(self.features)):
            raise ValueError(f"windows of shape {x.shape}, expected [N, {self.window}, {len(self.features)}]")
        z = ((x - self.offset) * self.inv_scale).astype(np.float32)
        if self.layout == "flat":
            z = z.reshape(z.shape[0], -1)
        outs = []
        for i in range(0, z.shape[0], batch):
            (y,) = self.session.run([self.output_name], {self.input_name: z[i : i + batch]})
            outs.append(np.asarray(y, dtype=np.float32))
        y = np.concatenate(outs) if outs else np.zeros((0, self.horizon), np.float32)
        if self.quantiles:
            y = y.reshape(y.shape[0], self.horizon, len(self.quantiles))
        else:
            y = y.reshape(y.shape[0], self.horizon)
        return self._denormalize(y)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Point forecasts [N, H] as the worker serves them."""
        y = self.predict_raw(windows)
        if self.quantiles:
            y = np.sort(y, axis=2)[:, :, list(self.quantiles).index(0.5)]
        return y


def scores(pred: np.ndarray, actual: np.ndarray) -> dict:
    """RMSE and MAE over every horizon step of every pair (the monitor's convention)."""
    err = np.asarray(pred, np.float64) - np.asarray(actual, np.float64)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
    }
