#!/usr/bin/env python3
"""Bring your own model, PyTorch: train a GRU, build a streamcast bundle, and write test traffic.

    pip install ./python torch onnxruntime          # once (make test-torch does it in .venv-torch)
    python python/examples/torch_walkthrough.py --root models-byom \
        --events events.jsonl --expected expected.jsonl

1. Load the weekly Mauna Loa CO2 record (data/co2_weekly.csv) and make the features the shipped
   bundles use: co2 (ppm), month_sin and month_cos of the observation's date.
2. Standardize with the training rows' mean and standard deviation (the first 80 % of weeks).
   No scikit-learn here: the scalers are given as bundle scaler dicts.
3. Cut the series into windows of 16 weeks; the targets are the next 4 weeks' co2.
4. Train a GRU + Linear head (float32, [N, T, F] -> [N, 4]) that forecasts the change from the
   last observed week, for a few epochs.
5. from_torch(...) exports it to ONNX (torch.onnx.export, dynamic batch axis), writes
   models-byom/co2-torch/<version>/ and checks it with `streamcast models validate`.
6. Write ~200 validation windows as input events (each carries its own window) and PyTorch's own
   forecasts for them, to compare with what the worker serves.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamcast_bundle import from_torch

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["co2", "month_sin", "month_cos"]
WINDOW = 16
HORIZON = 4
NAME = "co2-torch"
TRAIN_FRACTION = 0.8
EVENTS = 200
SERIES = ["byom-c", "byom-d"]
EPOCHS = 10


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


class GRUForecaster(nn.Module):
    """[N, T, F] normalized windows -> [N, H] normalized co2: the last co2 plus a learned change."""

    def __init__(self, n_features: int, hidden: int, horizon: int) -> None:
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        # co2 is feature 0 and the target scaler is co2's input scaler, so the two add up.
        return x[:, -1, 0:1] + self.head(out[:, -1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="model root to write the bundle under")
    ap.add_argument("--events", type=Path, required=True, help="JSONL of input events to write")
    ap.add_argument("--expected", type=Path, required=True, help="JSONL of PyTorch's predictions to write")
    ap.add_argument("--streamcast", help="streamcast binary for the validation (default: found in the repo or on PATH)")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "co2_weekly.csv")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    # 1-2. Data, split, scalers from the training rows only.
    stamps, raw = load(args.data)
    n_train = int(TRAIN_FRACTION * len(raw))
    mean, std = raw[:n_train].mean(axis=0), raw[:n_train].std(axis=0)
    scaler = {"kind": "standard", "mean": mean.tolist(), "std": std.tolist()}
    target_scaler = {"kind": "standard", "mean": [float(mean[0])], "std": [float(std[0])]}

    # 3. Windows. Training windows end (targets included) before the split; validation ones after.
    x, y, starts = windows(raw, WINDOW, HORIZON)
    train = starts + WINDOW + HORIZON - 1 < n_train
    valid = starts >= n_train

    def model_input(w: np.ndarray) -> torch.Tensor:
        """Raw windows [M, T, F] -> normalized float32 [M, T, F]: what streamcast feeds."""
        return torch.from_numpy(((w - mean) / std).astype(np.float32))

    # 4. Train.
    model = GRUForecaster(len(FEATURES), hidden=32, horizon=HORIZON)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = model_input(x[train]), torch.from_numpy(((y[train] - mean[0]) / std[0]).astype(np.float32))
    for epoch in range(EPOCHS):
        order = torch.randperm(len(xs))
        for i in range(0, len(xs), 64):
            batch = order[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xs[batch]), ys[batch])
            loss.backward()
            opt.step()
    model.eval()

    def predict(w: np.ndarray) -> np.ndarray:
        """PyTorch's own forecast for raw windows, in ppm: [M, HORIZON]."""
        with torch.no_grad():
            return model(model_input(w)).numpy().astype(np.float64) * std[0] + mean[0]

    err = predict(x[valid]) - y[valid]
    naive = x[valid][:, -1, :1] - y[valid]
    rmse, mae = float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
    print(f"validation: RMSE {rmse:.4f} ppm, MAE {mae:.4f} (last value: RMSE {float(np.sqrt(np.mean(naive**2))):.4f})")

    # 5. The bundle.
    bundle_dir = from_torch(
        model,
        scaler,
        x[train],  # raw training windows: the drift reference and the golden cases come from them
        layout="sequence",
        root=args.root,
        name=NAME,
        features=FEATURES,
        window=WINDOW,
        horizon=HORIZON,
        target="co2",
        target_scaler=target_scaler,
        validation={"rmse": rmse, "mae": mae},
        metadata={"recipe": {"script": "python/examples/torch_walkthrough.py", "data": "data/co2_weekly.csv",
                             "train_rows": n_train, "model": "GRU(3, 32) + Linear(32, 4), last-value skip",
                             "epochs": EPOCHS, "seed": 0}},
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
                "id": f"pt-{k:04d}",
                "series_id": SERIES[k % len(SERIES)],
                "timestamp": stamps[starts[i] + WINDOW - 1],
                "window": x[i].tolist(),  # oldest first, each row in feature order
            }
            ev.write(json.dumps(event) + "\n")
            ex.write(json.dumps({"id": event["id"], "series_id": event["series_id"], "prediction": pred.tolist()}) + "\n")
    print(f"events: {len(picks)} -> {args.events}; PyTorch's predictions -> {args.expected}")


if __name__ == "__main__":
    main()
