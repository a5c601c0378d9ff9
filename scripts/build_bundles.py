#!/usr/bin/env python3
"""Build streamcast's shipped model bundles and the Rust integration-test fixtures.

Everything is deterministic (fixed seeds, fixed `created_at`), so re-running the
script reproduces the same bytes given the pinned versions in
`scripts/requirements-bundles.txt`:

    python -m venv .venv && .venv/bin/pip install -r scripts/requirements-bundles.txt
    .venv/bin/python scripts/build_bundles.py

Data: the Mauna Loa weekly CO2 series shipped with statsmodels (1958-03-29 ..
2001-12-29, 2284 weeks, 59 missing weeks filled by linear interpolation).
Features per week: co2 (ppm), month_sin, month_cos = sin/cos(2*pi*month/12)
of the observation's date. Every raw value is rounded to 9 significant digits
*before* anything else, so what is written to JSON is exactly what the models
and the fixtures were computed from.

Outputs (relative to the repository root):

    models/co2-mlp/1/{model.onnx,bundle.json}   MLPRegressor, flat [N,72] -> [N,1]
    models/co2-mlp/2/{model.onnx,bundle.json}   same architecture, other seed/size
    models/co2-gru/1/{model.onnx,bundle.json}   ONNX GRU + ridge readout, [N,16,3] -> [N,4]
    models/co2-nbeats/1/{model.onnx,bundle.json} N-BEATS-style block, 1.09 M parameters,
                                                 flat [N,156] -> [N,4] (`--only co2-nbeats`)
    models/co2-quantile/1/{model.onnx,bundle.json} linear quantile regression, weekly
                                                 `frequency`, flat [N,48] -> [N,4,3] quantiles
                                                 0.05/0.5/0.95 (`--only co2-quantile`)
    tests/fixtures/co2-quantile/{events,expected}.jsonl
    tests/fixtures/co2-mlp/{events,expected}.jsonl
    tests/fixtures/co2-gru/{events,expected}.jsonl
    tests/fixtures/poison.jsonl

Semantics the Rust worker implements (and `FixtureWorker` below re-implements
from bundle.json alone, sharing no code with training):

* normalize each feature: (x - mean[f]) / std[f], fed as float32;
* de-normalize each output: y * target_std + target_mean, the target scaler's
  single element applied to every horizon step;
* `flat` layout: [N, T*F], time-major (step 0's F features, then step 1's, ...);
  `sequence` layout: [N, T, F];
* per-series state: an event without `window` appends its observation (the
  last T are kept); with fewer than T held, left-pad by repeating the oldest
  held observation and report warmup=true. An event with `window` uses it as
  the whole input, leaves the series' state untouched, and has warmup=false.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

EXPECTED_VERSIONS = {
    "onnxruntime": "1.31.1",
    "onnx": "1.23.2",
    "sklearn": "1.9.1",
    "skl2onnx": "1.20.0",
    "statsmodels": "0.15.0",
}

CREATED_AT = "2026-11-26T00:00:00Z"
FEATURES = ["co2", "month_sin", "month_cos"]
TARGET = "co2"
TRAIN_FRACTION = 0.8
REFERENCE_MAX = 2000
N_GOLDEN = 5
OPSET = 17
IR_VERSION = 10

# Fixture stream shape.
N_SERIES = 6
SERIES_OFFSET = 200  # weeks between the start of consecutive series
EVENTS_PER_SERIES = 50
UNKNOWN_FEATURE = "humidity"

# GRU echo-state network hyper-parameters (chosen from a small sweep; see models/README.md).
GRU_HIDDEN = 24
GRU_SEED = 1
GRU_INPUT_SCALE = 0.1  # W ~ U(-0.1, 0.1): keeps the gates near their linear range
GRU_RECURRENT_SCALE = 0.3  # R ~ U(-0.3, 0.3)
RIDGE_LAMBDA = 1e-5

MLP_VERSIONS = {
    # version: (hidden_layer_sizes, random_state)
    "1": ((16,), 0),
    "2": ((20,), 1),
}
MLP_ALPHA = 1e-2

# The large bundle, co2-nbeats: the fully connected stack of one N-BEATS generic block
# (Oreshkin et al., 2020: four ReLU layers of one width, then a linear forecast head) on a year
# of weeks, 1.09 M parameters, so that inference, not JSON, is the cost per event. One block
# without the backcast branch (with a single block it has nothing to feed), and a skip that
# adds the last observed co2 to the block's forecast.
NBEATS_WINDOW = 52
NBEATS_HORIZON = 4
NBEATS_WIDTH = 576
NBEATS_LAYERS = 4
NBEATS_SEED = 0
NBEATS_ALPHA = 1e-3
NBEATS_EPOCHS = 200
NBEATS_MAX_BYTES = 8_000_000

# The sample quantile bundle, co2-quantile: one linear quantile regression (scikit-learn's
# QuantileRegressor, no penalty) per horizon step and level on 16-week standardized windows.
QUANTILE_WINDOW = 16
QUANTILE_HORIZON = 4
QUANTILE_LEVELS = [0.05, 0.5, 0.95]
QUANTILE_FIXTURE_START = 1900  # a validation stretch of the series
QUANTILE_FIXTURE_EVENTS = 120


# ---------------------------------------------------------------------------
# small helpers


def r9(x: float) -> float:
    """Round to at most 9 significant digits (and turn -0.0 into 0.0)."""
    v = float(f"{float(x):.9g}")
    if not math.isfinite(v):
        raise ValueError(f"non-finite value {x!r}")
    return v + 0.0


def r6(x: float) -> float:
    v = round(float(x), 6) + 0.0
    if not math.isfinite(v):
        raise ValueError(f"non-finite value {x!r}")
    return v


def r9_list(xs) -> list:
    return [r9(v) for v in np.asarray(xs, dtype=np.float64).ravel()]


def dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, allow_nan=False)
        f.write("\n")


def dump_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, allow_nan=False, separators=(",", ":")) + "\n")


def evenly(n: int, k: int) -> np.ndarray:
    """At most k indices spread evenly over range(n), first and last included."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def check_versions() -> None:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn
    import statsmodels

    found = {
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "sklearn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "statsmodels": statsmodels.__version__,
    }
    for name, want in EXPECTED_VERSIONS.items():
        if found[name] != want:
            print(
                f"warning: {name} {found[name]} != pinned {want}; outputs may differ byte-wise",
                file=sys.stderr,
            )


# ---------------------------------------------------------------------------
# data


class Data:
    """The weekly series: dates, raw features [N, F] (rounded to 9 sig. digits)."""

    def __init__(self) -> None:
        import statsmodels.api as sm

        df = sm.datasets.co2.load_pandas().data
        self.n_missing = int(df["co2"].isna().sum())
        co2 = df["co2"].interpolate(method="linear", limit_direction="both").to_numpy(np.float64)
        month = df.index.month.to_numpy()
        raw = np.stack(
            [co2, np.sin(2 * np.pi * month / 12.0), np.cos(2 * np.pi * month / 12.0)], axis=1
        )
        self.raw = np.vectorize(r9)(raw).astype(np.float64)
        self.dates = [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in df.index]
        self.n = len(self.raw)
        self.n_train = int(TRAIN_FRACTION * self.n)
        assert np.isfinite(self.raw).all()

    @property
    def co2(self) -> np.ndarray:
        return self.raw[:, 0]

    def scalers(self):
        """Standard scalers fitted on the training split, rounded to 9 digits."""
        train = self.raw[: self.n_train]
        mean = np.array(r9_list(train.mean(axis=0)))
        std = np.array(r9_list(train.std(axis=0)))  # population std, like StandardScaler
        t_mean = np.array([r9(self.co2[: self.n_train].mean())])
        t_std = np.array([r9(self.co2[: self.n_train].std())])
        return mean, std, t_mean, t_std

    def windows(self, t: int, h: int):
        """All (window, targets) pairs; split so no training target is in validation."""
        starts = np.arange(0, self.n - t - h + 1)
        x = np.stack([self.raw[s : s + t] for s in starts])  # [M, T, F] raw
        y = np.stack([self.co2[s + t : s + t + h] for s in starts])  # [M, H] raw
        train = starts + t + h - 1 < self.n_train
        valid = starts + t >= self.n_train
        return starts, x, y, train, valid


def to_model_input(raw_windows: np.ndarray, mean, std, layout: str) -> np.ndarray:
    z = ((raw_windows - mean) / std).astype(np.float32)
    if layout == "flat":
        return z.reshape(z.shape[0], -1)
    return z


# ---------------------------------------------------------------------------
# ONNX helpers


def finalize_model(model, doc: str):
    import onnx

    model.ir_version = IR_VERSION
    model.producer_name = "streamcast/scripts/build_bundles.py"
    model.producer_version = "1"
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])


def run_model(sess, x: np.ndarray) -> np.ndarray:
    (y,) = sess.run(["output"], {"input": x})
    return y


# ---------------------------------------------------------------------------
# models


def export_mlp(reg, name: str, inputs: int, outputs: int):
    """An MLPRegressor as ONNX: `input` f32 [N, inputs] -> `output` f32 [N, outputs]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        reg,
        name=name,
        initial_types=[("input", FloatTensorType([None, inputs]))],
        final_types=[("output", FloatTensorType([None, outputs]))],
        target_opset=OPSET,
    )
    # skl2onnx 1.20 reshapes an MLPRegressor's output to [-1, 1] even with several outputs
    # (which would turn [N, 4] into [4N, 1]): give the final Reshape the real width.
    from onnx import numpy_helper

    reshape = [n for n in onx.graph.node if n.op_type == "Reshape"][-1]
    for i, init in enumerate(onx.graph.initializer):
        if outputs > 1 and init.name == reshape.input[1]:
            onx.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(np.array([-1, outputs], dtype=np.int64), init.name)
            )
    # skl2onnx names the output "variable" unless final_types is honoured; make sure.
    out = onx.graph.output[0]
    if out.name != "output":
        old = out.name
        for node in onx.graph.node:
            node.output[:] = ["output" if o == old else o for o in node.output]
        out.name = "output"
    return onx


def build_mlp(data: Data, version: str):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    t, h, f = 24, 1, len(FEATURES)
    hidden, seed = MLP_VERSIONS[version]
    mean, std, t_mean, t_std = data.scalers()
    _, xw, yw, tr, _ = data.windows(t, h)
    x = to_model_input(xw, mean, std, "flat").astype(np.float64)
    y = ((yw[:, 0] - t_mean[0]) / t_std[0]).astype(np.float64)

    reg = MLPRegressor(
        hidden_layer_sizes=hidden,
        alpha=MLP_ALPHA,
        max_iter=3000,
        tol=1e-7,
        n_iter_no_change=50,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg.fit(x[tr], y[tr])

    onx = export_mlp(reg, f"co2-mlp-v{version}", t * f, h)
    model = finalize_model(
        onx,
        f"co2-mlp v{version}: MLPRegressor{hidden} (relu, alpha={MLP_ALPHA}, random_state={seed}), "
        f"{reg.n_iter_} epochs; input [N,{t * f}] flat time-major standardized, output [N,1] standardized co2.",
    )
    info = {"kind": "mlp", "hidden": list(hidden), "seed": seed, "epochs": int(reg.n_iter_)}
    return model, dict(name="co2-mlp", version=version, window=t, horizon=h, layout="flat"), info


def add_last_value(onx, column: int):
    """`output` = the exported network's output + input[:, column] (a skip from one input)."""
    from onnx import helper, numpy_helper

    g = onx.graph
    for node in g.node:
        node.output[:] = ["block_output" if o == "output" else o for o in node.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([column], dtype=np.int64), "last_start"),
            numpy_helper.from_array(np.array([column + 1], dtype=np.int64), "last_end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "last_axis"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Slice", ["input", "last_start", "last_end", "last_axis"], ["last_value"], name="last_value"),
            helper.make_node("Add", ["block_output", "last_value"], ["output"], name="skip"),
        ]
    )
    return onx


def build_nbeats(data: Data):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    t, h, f = NBEATS_WINDOW, NBEATS_HORIZON, len(FEATURES)
    mean, std, t_mean, t_std = data.scalers()
    _, xw, yw, tr, _ = data.windows(t, h)
    x = to_model_input(xw, mean, std, "flat").astype(np.float64)
    # The block forecasts the change from the last observed co2 (standardized with the target's
    # own scaler, so the two add up); the graph adds that observation back. Without the skip
    # the network extrapolates the upward trend poorly and loses to the naive forecast.
    last = (t - 1) * f + FEATURES.index(TARGET)
    assert mean[FEATURES.index(TARGET)] == t_mean[0] and std[FEATURES.index(TARGET)] == t_std[0]
    y = ((yw - t_mean[0]) / t_std[0]).astype(np.float64) - x[:, last : last + 1]
    hidden = (NBEATS_WIDTH,) * NBEATS_LAYERS
    reg = MLPRegressor(
        hidden_layer_sizes=hidden,
        alpha=NBEATS_ALPHA,
        max_iter=NBEATS_EPOCHS,
        tol=1e-6,
        n_iter_no_change=20,
        random_state=NBEATS_SEED,
    )
    with warnings.catch_warnings():
        # A fixed epoch budget, not convergence, bounds the build time.
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(x[tr], y[tr])
    params = sum(w.size for w in reg.coefs_) + sum(b.size for b in reg.intercepts_)
    assert params >= 1_000_000, params
    onx = add_last_value(export_mlp(reg, "co2-nbeats-v1", t * f, h), last)
    # The export must give scikit-learn's own numbers (float32 inside ONNX Runtime).
    got = run_model(session(onx.SerializeToString()), x[:256].astype(np.float32))
    worst = float(np.abs(got - (reg.predict(x[:256]) + x[:256, last : last + 1])).max())
    assert worst < 1e-4, f"co2-nbeats export differs from scikit-learn by {worst}"
    model = finalize_model(
        onx,
        f"co2-nbeats v1: the FC stack of one N-BEATS generic block, MLPRegressor{hidden} (relu, "
        f"alpha={NBEATS_ALPHA}, random_state={NBEATS_SEED}), {params} parameters, {reg.n_iter_} epochs; "
        f"input [N,{t * f}] flat time-major standardized, output [N,{h}] standardized co2.",
    )
    info = {"kind": "nbeats-block", "hidden": list(hidden), "parameters": int(params), "epochs": int(reg.n_iter_)}
    return model, dict(name="co2-nbeats", version="1", window=t, horizon=h, layout="flat"), info


def gru_graph(w, r, b, w_out=None, b_out=None, t=16, f=3):
    """The co2-gru graph. Without a readout it outputs the last hidden state [N, hidden]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden = r.shape[-1]
    inits = [
        numpy_helper.from_array(w.astype(np.float32), "gru_W"),
        numpy_helper.from_array(r.astype(np.float32), "gru_R"),
        numpy_helper.from_array(b.astype(np.float32), "gru_B"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "squeeze_axes"),
    ]
    nodes = [
        helper.make_node("Transpose", ["input"], ["input_tnf"], perm=[1, 0, 2], name="to_time_major"),
        helper.make_node(
            "GRU",
            ["input_tnf", "gru_W", "gru_R", "gru_B"],
            ["", "gru_Y_h"],
            hidden_size=hidden,
            linear_before_reset=0,
            direction="forward",
            name="gru",
        ),
        helper.make_node("Squeeze", ["gru_Y_h", "squeeze_axes"], ["hidden"], name="drop_direction"),
    ]
    if w_out is None:
        out_name, out_dim = "hidden", hidden
    else:
        inits += [
            numpy_helper.from_array(w_out.astype(np.float32), "readout_W"),
            numpy_helper.from_array(b_out.astype(np.float32), "readout_b"),
        ]
        nodes += [
            helper.make_node("MatMul", ["hidden", "readout_W"], ["readout_mm"], name="readout_matmul"),
            helper.make_node("Add", ["readout_mm", "readout_b"], ["output"], name="readout_bias"),
        ]
        out_name, out_dim = "output", w_out.shape[1]
    graph = helper.make_graph(
        nodes,
        "co2_gru",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", t, f])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", out_dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def numpy_gru_last(x: np.ndarray, w, r, b) -> np.ndarray:
    """ONNX GRU (forward, linear_before_reset=0, zero initial state) in float64.

    Gate order z, r, h; B = [Wb_z, Wb_r, Wb_h, Rb_z, Rb_r, Rb_h].
    """
    w, r, b = w[0].astype(np.float64), r[0].astype(np.float64), b[0].astype(np.float64)
    wz, wr, wh = np.split(w, 3)
    rz, rr, rh = np.split(r, 3)
    wbz, wbr, wbh, rbz, rbr, rbh = np.split(b, 6)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    hstate = np.zeros((x.shape[0], r.shape[1]))
    for step in range(x.shape[1]):
        xt = x[:, step].astype(np.float64)
        z = sig(xt @ wz.T + hstate @ rz.T + wbz + rbz)
        rg = sig(xt @ wr.T + hstate @ rr.T + wbr + rbr)
        hh = np.tanh(xt @ wh.T + (rg * hstate) @ rh.T + rbh + wbh)
        hstate = (1.0 - z) * hh + z * hstate
    return hstate


def build_gru(data: Data):
    t, h, f, hid = 16, 4, len(FEATURES), GRU_HIDDEN
    mean, std, t_mean, t_std = data.scalers()
    _, xw, yw, tr, _ = data.windows(t, h)
    x = to_model_input(xw, mean, std, "sequence")
    y = (yw - t_mean[0]) / t_std[0]

    rng = np.random.default_rng(GRU_SEED)
    w = rng.uniform(-GRU_INPUT_SCALE, GRU_INPUT_SCALE, (1, 3 * hid, f)).astype(np.float32)
    r = rng.uniform(-GRU_RECURRENT_SCALE, GRU_RECURRENT_SCALE, (1, 3 * hid, hid)).astype(np.float32)
    b = np.zeros((1, 6 * hid), dtype=np.float32)

    # Hidden states from the very GRU part of the exported graph, cross-checked in numpy.
    reservoir = session(gru_graph(w, r, b, t=t, f=f).SerializeToString())
    (hs,) = reservoir.run(["hidden"], {"input": x})
    hs_np = numpy_gru_last(x, w, r, b)
    gru_diff = float(np.abs(hs - hs_np).max())
    if gru_diff > 1e-5:
        raise AssertionError(f"onnxruntime GRU and numpy GRU disagree by {gru_diff}")

    # Ridge readout (bias unpenalized) on the training windows, standardized targets.
    a = np.hstack([hs.astype(np.float64), np.ones((len(hs), 1))])
    penalty = RIDGE_LAMBDA * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    coef = np.linalg.solve(a[tr].T @ a[tr] + penalty, a[tr].T @ y[tr])
    w_out, b_out = coef[:-1], coef[-1]

    model = finalize_model(
        gru_graph(w, r, b, w_out, b_out, t=t, f=f),
        f"co2-gru v1: echo-state GRU (hidden {hid}, W~U(+-{GRU_INPUT_SCALE}), R~U(+-{GRU_RECURRENT_SCALE}), "
        f"seed {GRU_SEED}, zero bias) + ridge readout (lambda {RIDGE_LAMBDA}); input [N,{t},{f}] standardized, "
        f"output [N,{h}] standardized co2 (one target scaler for every horizon step).",
    )
    info = {"kind": "gru", "gru_numpy_max_abs_diff": gru_diff, "readout_max_abs_coef": float(np.abs(coef).max())}
    return model, dict(name="co2-gru", version="1", window=t, horizon=h, layout="sequence"), info


# ---------------------------------------------------------------------------
# bundle.json


def point_metrics(pred: np.ndarray, xw: np.ndarray, yw: np.ndarray, tr: np.ndarray, va: np.ndarray) -> dict:
    """Validation RMSE/MAE of point forecasts `pred` [M, H], against the last-value forecast."""
    err = pred[va] - yw[va]
    naive = np.repeat(xw[va][:, -1, :1], yw.shape[1], axis=1) - yw[va]
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "rmse_per_step": np.sqrt(np.mean(err**2, axis=0)).tolist(),
        "naive_rmse": float(np.sqrt(np.mean(naive**2))),
        "naive_mae": float(np.mean(np.abs(naive))),
        "naive_rmse_per_step": np.sqrt(np.mean(naive**2, axis=0)).tolist(),
        "train_windows": int(tr.sum()),
        "validation_windows": int(va.sum()),
    }


def build_quantile(data: Data):
    """co2-quantile: per step h and level tau a linear quantile regression of the standardized
    co2 h weeks ahead on the flat standardized window; ONNX MatMul + Add + Reshape to
    [N, H, Q]. Returns the model, its bundle.json and the fitted regressors (for the fixtures,
    whose expectations scikit-learn computes itself)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import QuantileRegressor

    t, h, levels = QUANTILE_WINDOW, QUANTILE_HORIZON, QUANTILE_LEVELS
    q, f = len(levels), len(FEATURES)
    mean, std, t_mean, t_std = data.scalers()
    _, xw, yw, tr, va = data.windows(t, h)
    x = to_model_input(xw, mean, std, "flat").astype(np.float64)
    z = (yw - t_mean[0]) / t_std[0]
    regs = [[QuantileRegressor(quantile=tau, alpha=0.0, solver="highs").fit(x[tr], z[tr, step]) for tau in levels]
            for step in range(h)]
    w = np.stack([r.coef_ for row in regs for r in row], axis=1).astype(np.float32)  # [T*F, H*Q]
    b = np.array([r.intercept_ for row in regs for r in row], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["output"]),
        ],
        "co2-quantile",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", t * f])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", h, q])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([-1, h, q], dtype=np.int64), "shape"),
        ],
    )
    model = finalize_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]),
        f"co2-quantile v1: linear quantile regression per step and level {levels} (scikit-learn QuantileRegressor, "
        f"alpha=0, highs); input [N,{t * f}] flat time-major standardized, output [N,{h},{q}] standardized co2.",
    )
    onnx.checker.check_model(model, full_check=True)
    sess = session(model.SerializeToString())

    def predict(raw_windows: np.ndarray) -> np.ndarray:
        """Denormalized [M, H, Q] from the model, each step's quantiles sorted."""
        out = run_model(sess, to_model_input(raw_windows, mean, std, "flat")).astype(np.float64)
        return np.sort(out * t_std[0] + t_mean[0], axis=2)

    pred = predict(xw)
    med = pred[:, :, levels.index(0.5)]
    covered = np.mean((pred[va, :, 0] <= yw[va]) & (yw[va] <= pred[va, :, -1]), axis=0)
    pinball = [float(np.mean(np.maximum(tau * (yw[va] - pred[va, :, j]), (tau - 1) * (yw[va] - pred[va, :, j]))))
               for j, tau in enumerate(levels)]
    metrics = {**point_metrics(med, xw, yw, tr, va), "coverage_90_per_step": covered.tolist(), "pinball": pinball}
    train_raw = data.raw[: data.n_train]
    ref_rows = evenly(len(train_raw), REFERENCE_MAX)
    ref_features = {name: [r6(v) for v in train_raw[ref_rows, i]] for i, name in enumerate(FEATURES)}
    train_med = med[tr][:, 0]
    golden = []
    val_idx = np.flatnonzero(va)
    for j in val_idx[evenly(len(val_idx), N_GOLDEN)]:
        window = [[r9(v) for v in row] for row in xw[j]]
        golden.append({"window": window, "prediction": [r9(v) for v in predict(np.array([window]))[0].ravel()]})
    bundle = {
        "name": "co2-quantile",
        "version": "1",
        "created_at": CREATED_AT,
        "features": list(FEATURES),
        "window": t,
        "horizon": h,
        "frequency": "7d",
        "quantiles": levels,
        "input": {"name": "input", "layout": "flat"},
        "output": {"name": "output"},
        "scaler": {"kind": "standard", "mean": r9_list(mean), "std": r9_list(std)},
        "target": {"name": TARGET, "scaler": {"kind": "standard", "mean": r9_list(t_mean), "std": r9_list(t_std)}},
        "reference": {"features": ref_features, "predictions": [r6(v) for v in train_med[evenly(len(train_med), REFERENCE_MAX)]]},
        "validation": {"rmse": r9(metrics["rmse"]), "mae": r9(metrics["mae"])},
        "golden": golden,
    }
    return model, bundle, metrics, regs


def write_quantile_fixtures(root: Path, data: Data, regs) -> dict:
    """One weekly series of consecutive validation weeks, as observations; the expected
    quantiles come from scikit-learn's own `predict` on the same (left-padded) windows, each
    step's sorted, with the 0.5 level as the point forecast."""
    t, levels = QUANTILE_WINDOW, QUANTILE_LEVELS
    mean, std, t_mean, t_std = data.scalers()
    rows = range(QUANTILE_FIXTURE_START, QUANTILE_FIXTURE_START + QUANTILE_FIXTURE_EVENTS)
    events, expected = [], []
    for i, row in enumerate(rows):
        events.append({"id": f"co2-quantile-e-{i:06d}", "series_id": "q-0", "timestamp": data.dates[row],
                       "features": dict(zip(FEATURES, (float(v) for v in data.raw[row])))})
        held = data.raw[max(QUANTILE_FIXTURE_START, row - t + 1) : row + 1]
        window = np.concatenate([np.repeat(held[:1], t - len(held), axis=0), held])
        # The worker feeds float32: the same rounding before scikit-learn's float64 arithmetic.
        x = ((window - mean) / std).astype(np.float32).astype(np.float64).reshape(1, -1)
        values = np.sort(np.array([[r.predict(x)[0] for r in row_regs] for row_regs in regs]) * t_std[0] + t_mean[0], axis=1)
        expected.append({"id": events[-1]["id"], "timestamp": data.dates[row], "warmup": len(held) < t,
                         "prediction": [float(v) for v in values[:, levels.index(0.5)]],
                         "quantiles": {"levels": levels, "values": values.tolist()}})
    out = root / "tests" / "fixtures" / "co2-quantile"
    dump_jsonl(out / "events.jsonl", events)
    dump_jsonl(out / "expected.jsonl", expected)
    return {"events": len(events), "warmup": sum(e["warmup"] for e in expected)}


def make_bundle(data: Data, model, meta: dict) -> tuple[dict, dict]:
    t, h, layout = meta["window"], meta["horizon"], meta["layout"]
    mean, std, t_mean, t_std = data.scalers()
    sess = session(model.SerializeToString())
    _, xw, yw, tr, va = data.windows(t, h)
    pred = run_model(sess, to_model_input(xw, mean, std, layout)).astype(np.float64) * t_std[0] + t_mean[0]
    assert pred.shape == yw.shape, (pred.shape, yw.shape)
    metrics = point_metrics(pred, xw, yw, tr, va)

    train_raw = data.raw[: data.n_train]
    ref_rows = evenly(len(train_raw), REFERENCE_MAX)
    ref_features = {name: [r6(v) for v in train_raw[ref_rows, i]] for i, name in enumerate(FEATURES)}
    train_pred = pred[tr][:, 0]
    ref_predictions = [r6(v) for v in train_pred[evenly(len(train_pred), REFERENCE_MAX)]]

    golden = []
    val_idx = np.flatnonzero(va)
    for j in val_idx[evenly(len(val_idx), N_GOLDEN)]:
        window = [[r9(v) for v in row] for row in xw[j]]
        # Recompute from exactly the numbers written to JSON.
        g = run_model(sess, to_model_input(np.array([window]), mean, std, layout)).astype(np.float64)
        prediction = [r9(v) for v in g[0] * t_std[0] + t_mean[0]]
        golden.append({"window": window, "prediction": prediction})

    bundle = {
        "name": meta["name"],
        "version": meta["version"],
        "created_at": CREATED_AT,
        "features": list(FEATURES),
        "window": t,
        "horizon": h,
        "input": {"name": "input", "layout": layout},
        "output": {"name": "output"},
        "scaler": {"kind": "standard", "mean": r9_list(mean), "std": r9_list(std)},
        "target": {
            "name": TARGET,
            "scaler": {"kind": "standard", "mean": r9_list(t_mean), "std": r9_list(t_std)},
        },
        "reference": {"features": ref_features, "predictions": ref_predictions},
        "validation": {"rmse": r9(metrics["rmse"]), "mae": r9(metrics["mae"])},
        "golden": golden,
    }
    return bundle, metrics


def write_bundle(root: Path, model, bundle: dict) -> Path:
    d = root / "models" / bundle["name"] / bundle["version"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(model.SerializeToString())
    dump_json(d / "bundle.json", bundle)
    return d


# ---------------------------------------------------------------------------
# fixtures: an independent re-implementation of the worker's semantics


class FixtureWorker:
    """What the Rust worker does, driven only by bundle.json and model.onnx."""

    def __init__(self, bundle_dir: Path) -> None:
        self.b = json.loads((bundle_dir / "bundle.json").read_text())
        self.sess = session((bundle_dir / "model.onnx").read_bytes())
        self.names = self.b["features"]
        self.t = self.b["window"]
        self.mean = np.array(self.b["scaler"]["mean"], dtype=np.float64)
        self.std = np.array(self.b["scaler"]["std"], dtype=np.float64)
        self.y_mean = float(self.b["target"]["scaler"]["mean"][0])
        self.y_std = float(self.b["target"]["scaler"]["std"][0])
        self.state: dict[str, list[list[float]]] = {}

    def observation(self, obs) -> list[float]:
        if isinstance(obs, dict):
            return [float(obs[name]) for name in self.names]  # unknown names ignored
        assert len(obs) == len(self.names)
        return [float(v) for v in obs]

    def predict(self, window: list[list[float]]) -> list[float]:
        z = (np.array(window, dtype=np.float64) - self.mean) / self.std
        z = z.astype(np.float32)[None]
        if self.b["input"]["layout"] == "flat":
            z = z.reshape(1, -1)
        (y,) = self.sess.run([self.b["output"]["name"]], {self.b["input"]["name"]: z})
        # A quantile bundle's [H, Q] output is served step-major, each step's values sorted.
        out = np.sort(y[0], axis=-1).ravel() if "quantiles" in self.b else y[0]
        return [float(v) * self.y_std + self.y_mean for v in out]

    def handle(self, event: dict) -> dict:
        if "window" in event:
            window = [self.observation(o) for o in event["window"]]
            assert len(window) == self.t
            warmup = False
        else:
            held = self.state.setdefault(event["series_id"], [])
            held.append(self.observation(event["features"]))
            del held[: max(0, len(held) - self.t)]
            warmup = len(held) < self.t
            window = [held[0]] * (self.t - len(held)) + held
        assert len(self.b["golden"][0]["prediction"]) == self.b["horizon"]
        return {
            "id": event["id"],
            "series_id": event["series_id"],
            "prediction": [r9(v) for v in self.predict(window)],
            "warmup": warmup,
        }


def make_events(data: Data, name: str, t: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)

    def as_object(row, extra=False, shuffle=False):
        items = list(zip(FEATURES, (float(v) for v in row)))
        if extra:
            items.insert(int(rng.integers(0, len(items) + 1)), (UNKNOWN_FEATURE, 1.0))
        if shuffle:
            items = [items[i] for i in rng.permutation(len(items))]
        return dict(items)

    def as_array(row):
        return [float(v) for v in row]

    events, counter = [], 0
    for step in range(EVENTS_PER_SERIES):
        for k in range(N_SERIES):
            row = SERIES_OFFSET * k + step
            counter += 1
            event = {
                "id": f"{name}-e-{counter:06d}",
                "series_id": f"s-{k}",
                "timestamp": data.dates[row],
            }
            obs = data.raw[row]
            u = rng.random()
            if u >= 0.9 and row >= t - 1:
                as_obj = bool(rng.random() < 0.5)
                rows = data.raw[row - t + 1 : row + 1]
                event["features"] = as_object(obs) if rng.random() < 0.5 else as_array(obs)
                event["window"] = [as_object(x) if as_obj else as_array(x) for x in rows]
            elif u >= 0.8:
                event["features"] = as_object(obs, extra=True)
            elif u >= 0.4:
                event["features"] = as_array(obs)
            else:
                event["features"] = as_object(obs, shuffle=bool(rng.random() < 0.3))
            events.append(event)
    return events


def write_fixtures(root: Path, data: Data, name: str, seed: int) -> dict:
    worker = FixtureWorker(root / "models" / name / "1")
    events = make_events(data, name, worker.t, seed)
    expected = [worker.handle(e) for e in events]
    out = root / "tests" / "fixtures" / name
    dump_jsonl(out / "events.jsonl", events)
    dump_jsonl(out / "expected.jsonl", expected)
    forms = {"object": 0, "array": 0, "object+unknown": 0, "window": 0}
    for e in events:
        if "window" in e:
            forms["window"] += 1
        elif isinstance(e["features"], list):
            forms["array"] += 1
        elif UNKNOWN_FEATURE in e["features"]:
            forms["object+unknown"] += 1
        else:
            forms["object"] += 1
    return {"events": len(events), "warmup": sum(x["warmup"] for x in expected), "forms": forms}


def write_poison(root: Path, data: Data) -> int:
    ts = data.dates[0]
    obs = {name: float(v) for name, v in zip(FEATURES, data.raw[0])}
    base = {"id": "poison-1", "series_id": "s-0", "timestamp": ts, "features": obs}

    def without(key):
        return json.dumps({k: v for k, v in base.items() if k != key})

    def replaced(**kw):
        return json.dumps({**base, **kw})

    co2, ms, mc = (repr(float(v)) for v in data.raw[0])
    cases = [
        ("invalid_json", "invalid_json", "{not json"),
        ("missing_id", "missing_field", without("id")),
        ("missing_series_id", "missing_field", without("series_id")),
        ("missing_timestamp", "missing_field", without("timestamp")),
        ("missing_features_and_window", "missing_field", without("features")),
        ("features_is_string", "invalid_field", replaced(features="co2=316.1")),
        ("timestamp_not_rfc3339", "invalid_field", replaced(timestamp="yesterday")),
        ("id_is_number", "invalid_field", replaced(id=12345)),
        (
            "object_missing_month_cos",
            "missing_feature",
            replaced(features={k: v for k, v in obs.items() if k != "month_cos"}),
        ),
        ("array_too_short", "missing_feature", replaced(features=[obs["co2"], obs["month_sin"]])),
        # Python's json.dumps writes float('nan') as the bare token NaN (not valid JSON).
        ("nan_literal", "non_finite", replaced(features={**obs, "co2": float("nan")})),
        (
            "overflow_1e999",
            "non_finite",
            '{"id": "poison-1", "series_id": "s-0", "timestamp": "%s", '
            '"features": {"co2": 1e999, "month_sin": %s, "month_cos": %s}}' % (ts, ms, mc),
        ),
        (
            "window_too_short",
            "window_length",
            replaced(window=[[float(v) for v in row] for row in data.raw[:5]]),
        ),
    ]
    assert "NaN" in cases[10][2] and co2
    dump_jsonl(
        root / "tests" / "fixtures" / "poison.jsonl",
        [{"case": c, "kind": k, "payload": p} for c, k, p in cases],
    )
    return len(cases)


# ---------------------------------------------------------------------------
# verification


def verify_bundle(bundle_dir: Path) -> float:
    """Load as the worker would, check I/O names and shapes, replay the golden cases."""
    import onnx

    b = json.loads((bundle_dir / "bundle.json").read_text())
    model = onnx.load(str(bundle_dir / "model.onnx"))
    assert model.ir_version == IR_VERSION
    assert all(o.version <= 21 for o in model.opset_import)
    t, f, h = b["window"], len(b["features"]), b["horizon"]
    sess = session((bundle_dir / "model.onnx").read_bytes())
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == b["input"]["name"] and out.name == b["output"]["name"]
    want_in = [t * f] if b["input"]["layout"] == "flat" else [t, f]
    assert inp.shape[1:] == want_in and inp.type == "tensor(float)", inp
    want_out = [h, len(b["quantiles"])] if "quantiles" in b else [h]
    assert out.shape[1:] == want_out and out.type == "tensor(float)", out
    worker = FixtureWorker(bundle_dir)
    worst = 0.0
    for g in b["golden"]:
        got = worker.predict(g["window"])
        worst = max(worst, max(abs(a - e) for a, e in zip(got, g["prediction"])))
    assert worst < 1e-5, f"{bundle_dir}: golden mismatch {worst}"
    size = (bundle_dir / "model.onnx").stat().st_size
    limit = NBEATS_MAX_BYTES if b["name"] == "co2-nbeats" else 200_000
    assert size < limit, f"{bundle_dir}/model.onnx is {size} bytes"
    return worst


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="repository root to write models/ and tests/fixtures/ under (default: this repo)",
    )
    ap.add_argument(
        "--only",
        choices=["co2-nbeats", "co2-quantile"],
        help="build only this bundle (the large one trains for minutes; the others are unchanged)",
    )
    args = ap.parse_args()
    root: Path = args.root
    check_versions()

    data = Data()
    print(
        f"co2: {data.n} weeks {data.dates[0][:10]}..{data.dates[-1][:10]}, "
        f"{data.n_missing} interpolated, train = first {data.n_train} weeks (< {data.dates[data.n_train][:10]})"
    )

    built = []
    if args.only is None:
        for version in MLP_VERSIONS:
            built.append(build_mlp(data, version))
        built.append(build_gru(data))
    if args.only in (None, "co2-nbeats"):
        built.append(build_nbeats(data))

    report = []
    for model, meta, info in built:
        bundle, metrics = make_bundle(data, model, meta)
        d = write_bundle(root, model, bundle)
        report.append((d, bundle, metrics, info))

    fixtures = {}
    if args.only in (None, "co2-quantile"):
        model, bundle, metrics, regs = build_quantile(data)
        d = write_bundle(root, model, bundle)
        report.append((d, bundle, metrics, {"kind": "quantile", "levels": QUANTILE_LEVELS,
                                            "coverage_90_per_step": [round(c, 3) for c in metrics["coverage_90_per_step"]],
                                            "pinball": [round(p, 4) for p in metrics["pinball"]]}))
        fixtures["co2-quantile"] = write_quantile_fixtures(root, data, regs)
    n_poison = 0
    if args.only is None:
        fixtures["co2-mlp"] = write_fixtures(root, data, "co2-mlp", seed=11)
        fixtures["co2-gru"] = write_fixtures(root, data, "co2-gru", seed=12)
        n_poison = write_poison(root, data)

    print()
    print(f"{'bundle':<12} {'H':>2} {'rmse':>8} {'mae':>8} {'naive rmse':>11} {'naive mae':>10}  golden err  size  sha256")
    for d, bundle, m, info in report:
        worst = verify_bundle(d)
        print(
            f"{bundle['name'] + '/' + bundle['version']:<12} {bundle['horizon']:>2} {m['rmse']:8.4f} {m['mae']:8.4f} "
            f"{m['naive_rmse']:11.4f} {m['naive_mae']:10.4f}  {worst:.1e}   "
            f"{(d / 'model.onnx').stat().st_size:>6}  {sha(d / 'model.onnx')}"
        )
        if bundle["horizon"] > 1:
            print(
                "             rmse per step " + " ".join(f"{v:.4f}" for v in m["rmse_per_step"])
                + " | naive " + " ".join(f"{v:.4f}" for v in m["naive_rmse_per_step"])
            )
        print(f"             {info} windows train={m['train_windows']} validation={m['validation_windows']}")
    for name, s in fixtures.items():
        print(f"fixtures {name}: {s}")
    print(f"poison cases: {n_poison}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
