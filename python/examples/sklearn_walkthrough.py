#!/usr/bin/env python3
"""Bring your own model, scikit-learn: train, build a streamcast bundle, and write test traffic.

    pip install ./python scikit-learn skl2onnx      # once (make test-deps does it for .venv)
    python python/examples/sklearn_walkthrough.py --root models-byom \
        --events events.jsonl --expected expected.jsonl

1. Load the weekly Mauna Loa CO2 record (data/co2_weekly.csv) and make the features the shipped
   bundles use: co2 (ppm), month_sin and month_cos of the observation's date.
2. Fit a StandardScaler on the training rows (the first 80 % of weeks) for the inputs, and one on
   co2 for the target.
3. Cut the series into windows of 24 weeks; the target is the next week's co2.
4. Train an MLPRegressor on normalized, flattened (time-major) windows.
5. from_sklearn(...) exports it to ONNX, writes models-byom/co2-sklearn/<version>/ and checks it
   with `streamcast models validate` (golden cases must reproduce scikit-learn's predictions).
   With --pipeline, the model is instead a scikit-learn Pipeline (StandardScaler over the flat
   window, then the MLPRegressor) trained on raw windows, and from_sklearn gets scaler=None: the
   normalization lives inside the ONNX graph and streamcast's own scaler is the identity.
6. Write ~200 validation windows as input events (the stateless form: each event carries its own
   window) and scikit-learn's own predictions for them, to compare with what the worker serves.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from streamcast_bundle import from_sklearn

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["co2", "month_sin", "month_cos"]
WINDOW = 24
HORIZON = 1
NAME = "co2-sklearn"
TRAIN_FRACTION = 0.8
EVENTS = 200
SERIES = ["byom-a", "byom-b"]


def load(path: Path):
    """Timestamps and raw features [N, 3]: co2, and the month as a point on the unit circle."""
    stamps, rows = [], []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            month = dt.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).month
            angle = 2 * math.pi * month / 12
            stamps.append(r["timestamp"])
            rows.append([float(r["co2"]), math.sin(angle), math.cos(angle)])
    return stamps, np.array(rows)


def windows(raw: np.ndarray, t: int, h: int):
    """Every window [M, t, F], its next h co2 values [M, h], and the window starts."""
    starts = np.arange(len(raw) - t - h + 1)
    x = np.stack([raw[s : s + t] for s in starts])
    y = np.stack([raw[s + t : s + t + h, 0] for s in starts])
    return x, y, starts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="model root to write the bundle under")
    ap.add_argument("--events", type=Path, required=True, help="JSONL of input events to write")
    ap.add_argument("--expected", type=Path, required=True, help="JSONL of scikit-learn's predictions to write")
    ap.add_argument("--streamcast", help="streamcast binary for the validation (default: found in the repo or on PATH)")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "co2_weekly.csv")
    ap.add_argument("--pipeline", action="store_true",
                    help="train a Pipeline(StandardScaler, MLPRegressor) on raw windows; the bundle's scaler is the identity")
    args = ap.parse_args()
    name = NAME + "-pipeline" if args.pipeline else NAME

    # 1-2. Data, split, scalers fitted on training rows only.
    stamps, raw = load(args.data)
    n_train = int(TRAIN_FRACTION * len(raw))
    scaler = StandardScaler().fit(raw[:n_train])
    target_scaler = StandardScaler().fit(raw[:n_train, :1])

    # 3. Windows. Training windows end (targets included) before the split; validation ones after.
    x, y, starts = windows(raw, WINDOW, HORIZON)
    train = starts + WINDOW + HORIZON - 1 < n_train
    valid = starts >= n_train

    def model_input(w: np.ndarray) -> np.ndarray:
        """Raw windows [M, T, F] -> normalized, flattened time-major [M, T*F]: what streamcast feeds."""
        return scaler.transform(w.reshape(-1, len(FEATURES))).reshape(len(w), -1)

    # 4. Train.
    mlp = MLPRegressor(hidden_layer_sizes=(16,), alpha=1e-2, max_iter=3000, tol=1e-7, n_iter_no_change=50, random_state=0)
    if args.pipeline:
        # The scaler is a step of the model: it sees raw flattened windows, one column per
        # (step, feature), and is exported into the ONNX graph with the MLP.
        model = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
        model_input = lambda w: w.reshape(len(w), -1)  # noqa: E731 - raw, flattened time-major
        scaler = None
    else:
        model = mlp
    model.fit(model_input(x[train]), target_scaler.transform(y[train]).ravel())

    def predict(w: np.ndarray) -> np.ndarray:
        """scikit-learn's own forecast for raw windows, in ppm: [M, HORIZON]."""
        return target_scaler.inverse_transform(model.predict(model_input(w)).reshape(-1, HORIZON))

    err = predict(x[valid]) - y[valid]
    naive = x[valid][:, -1, :1] - y[valid]
    rmse, mae = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
    print(f"validation: RMSE {rmse:.4f} ppm, MAE {mae:.4f} (last value: RMSE {float(np.sqrt(np.mean(naive**2))):.4f})")

    # 5. The bundle.
    bundle_dir = from_sklearn(
        model,
        scaler,
        x[train],  # raw training windows: the drift reference and the golden cases come from them
        root=args.root,
        name=name,
        features=FEATURES,
        window=WINDOW,
        horizon=HORIZON,
        target="co2",
        target_scaler=target_scaler,
        validation={"rmse": rmse, "mae": mae},
        metadata={"recipe": {"script": "python/examples/sklearn_walkthrough.py", "data": "data/co2_weekly.csv",
                             "train_rows": n_train, "model": repr(model)}},
        streamcast=args.streamcast,
    )
    print(f"bundle: {bundle_dir}")

    # 6. Test traffic: evenly spaced validation windows, alternating between two series.
    picks = np.flatnonzero(valid)[np.unique(np.linspace(0, valid.sum() - 1, EVENTS).round().astype(int))]
    expected = predict(x[picks])
    args.events.parent.mkdir(parents=True, exist_ok=True)
    args.expected.parent.mkdir(parents=True, exist_ok=True)
    with args.events.open("w") as ev, args.expected.open("w") as ex:
        for k, (i, pred) in enumerate(zip(picks, expected)):
            event = {
                "id": f"sk-{k:04d}",
                "series_id": SERIES[k % len(SERIES)],
                "timestamp": stamps[starts[i] + WINDOW - 1],
                "window": x[i].tolist(),  # oldest first, each row in feature order
            }
            ev.write(json.dumps(event) + "\n")
            ex.write(json.dumps({"id": event["id"], "series_id": event["series_id"], "prediction": pred.tolist()}) + "\n")
    print(f"events: {len(picks)} -> {args.events}; scikit-learn's predictions -> {args.expected}")


if __name__ == "__main__":
    main()
