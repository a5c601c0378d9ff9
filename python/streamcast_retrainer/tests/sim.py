"""A stream like the demo's, as Kafka records, for tests without a broker."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from streamcast_retrainer.data import Record

REPO = Path(__file__).resolve().parents[3]
FEATURES = ["co2", "month_sin", "month_cos"]


def co2_rows() -> tuple[list[str], np.ndarray]:
    with (REPO / "data" / "co2_weekly.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [r["timestamp"] for r in rows], np.array([[float(r[c]) for c in FEATURES] for r in rows])


def stream(series: int, events: int, shift_from: int, shift: float, partitions: int = 3, first_row: int = 0):
    """(inputs, actuals) records: `series` series replaying consecutive weeks from spread-out
    starts; from event `shift_from` on, co2 is shifted by `shift` in the input while the actual
    (the next week's true co2, sent for each event) stays true."""
    stamps, rows = co2_rows()
    stride = (len(rows) - events - 2 - first_row) // max(series, 1)
    inputs, actuals = [], []
    offsets = [0] * partitions
    aoffsets = [0] * partitions
    clock = 1_700_000_000_000
    for i in range(events):
        for s in range(series):
            r = first_row + s * stride + i
            values = rows[r].copy()
            if i >= shift_from:
                values[0] += shift
            p = s % partitions
            e = {"id": f"e-{s}-{i}", "series_id": f"s-{s}", "timestamp": stamps[r],
                 "features": dict(zip(FEATURES, map(float, values))) if i % 2 else [float(v) for v in values]}
            clock += 1
            inputs.append(Record(p, offsets[p], clock, json.dumps(e).encode()))
            offsets[p] += 1
            a = {"id": f"e-{s}-{i}", "series_id": f"s-{s}", "timestamp": stamps[r + 1], "actual": float(rows[r + 1][0])}
            actuals.append(Record(p, aoffsets[p], clock, json.dumps(a).encode()))
            aoffsets[p] += 1
    return inputs, actuals


def tail(records, per_partition: int):
    by_p: dict[int, list] = {}
    for r in records:
        by_p.setdefault(r.partition, []).append(r)
    return [r for p in sorted(by_p) for r in by_p[p][-per_partition:]]
