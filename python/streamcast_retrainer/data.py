"""From Kafka records to (window, target) pairs, and the split that keeps the holdout unseen.

Input events follow `schemas/input_event.schema.json`: `features` as an object (name -> number)
or an array in the bundle's order, or a `window` of observations (stateless: used as the whole
input of that event). Actuals follow `schemas/actual.schema.json`.

Windows are rebuilt per series as the worker builds them:

* bundles without `frequency`: arrival order (partition, offset), every observation appended;
* bundles with `frequency`: event-time order on a grid anchored at the series' first
  observation, the first observation of a step kept (`windows.duplicates = "keep_first"`); a
  window that spans a missing step is not used (the worker would have reset or filled it).

Only full windows are used (the worker's warm-up padding is not training data). A window's target
is, with `join_by = "id"`, the actual sent for the event that ended it; with `join_by = "time"`,
the values observed at the next `horizon` steps (on the actuals topic, or with
`actuals_from_input` the target feature of the input itself).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import numpy as np


@dataclass
class Record:
    """A Kafka record as read back: where and when it arrived, and its value."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes

    @property
    def arrival(self) -> tuple[int, int, int]:
        return (self.timestamp_ms, self.partition, self.offset)


@dataclass
class Observation:
    series: str
    id: str
    ts: float  # event time, epoch seconds
    values: np.ndarray  # [F] raw
    arrival: tuple


@dataclass
class Example:
    """One (window, target) pair."""

    x: np.ndarray  # [T, F] raw
    y: np.ndarray  # [H] raw
    arrival: tuple  # of the event that ended the window
    series: str | None = None
    pos: int | None = None  # the end observation's step (grid position, or arrival rank) in its series; None: a stateless event


@dataclass
class Decoded:
    observations: list[Observation] = field(default_factory=list)
    # Events that carry their own window: (id, window [T, F], arrival).
    windowed: list[tuple[str, np.ndarray, tuple]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def parse_time(text) -> float:
    if not isinstance(text, str):
        raise ValueError("timestamp is not a string")
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


def _finite(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("not a number")
    f = float(v)
    if not math.isfinite(f) or abs(f) > 3.4028234663852886e38:
        raise ValueError("not finite")
    return f


def observation_values(obs, features: list[str]) -> np.ndarray:
    """One observation (object or array form) in bundle feature order."""
    if isinstance(obs, dict):
        return np.array([_finite(obs[f]) for f in features], dtype=np.float64)
    if isinstance(obs, list):
        if len(obs) != len(features):
            raise ValueError("array length differs from the feature count")
        return np.array([_finite(v) for v in obs], dtype=np.float64)
    raise ValueError("features is neither an object nor an array")


def decode_inputs(records: Iterable[Record], features: list[str], window: int) -> Decoded:
    out = Decoded()
    for r in records:
        try:
            e = json.loads(r.value)
            if not isinstance(e, dict):
                raise ValueError
            eid, series = e["id"], e["series_id"]
            if not isinstance(eid, str) or not isinstance(series, str):
                raise ValueError
            ts = parse_time(e["timestamp"])
            if "window" in e:
                w = e["window"]
                if not isinstance(w, list) or len(w) != window:
                    raise ValueError
                out.windowed.append((eid, np.stack([observation_values(o, features) for o in w]), r.arrival))
            else:
                out.observations.append(Observation(series, eid, ts, observation_values(e["features"], features), r.arrival))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
            out.skip("invalid_event")
    return out


def decode_actuals_by_id(records: Iterable[Record], horizon: int) -> dict[str, np.ndarray]:
    """id -> [H] (the last record for an id wins: a correction)."""
    out: dict[str, np.ndarray] = {}
    for r in records:
        try:
            a = json.loads(r.value)
            v = a["actual"]
            values = [v] if not isinstance(v, list) else v
            vec = np.array([_finite(x) for x in values], dtype=np.float64)
            if len(vec) != horizon or not isinstance(a["id"], str):
                continue
            out[a["id"]] = vec
        except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
            continue
    return out


def _ms(ts: float) -> int:
    return int(round(ts * 1000.0))


def decode_actuals_by_time(records: Iterable[Record]) -> dict[tuple[str, int], float]:
    """(series, event-time ms) -> observed value (the last record wins: a correction)."""
    out: dict[tuple[str, int], float] = {}
    for r in records:
        try:
            a = json.loads(r.value)
            v = a["actual"]
            if isinstance(v, list):
                if len(v) != 1:
                    continue
                v = v[0]
            out[(a["series_id"], _ms(parse_time(a["timestamp"])))] = _finite(v)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
            continue
    return out


def series_sequences(
    observations: list[Observation], step_s: float | None, tolerance_s: float | None
) -> dict[str, list[tuple[int, Observation]]]:
    """Per series, (grid position, observation) in the order the worker windows them."""
    by_series: dict[str, list[Observation]] = {}
    for o in observations:
        by_series.setdefault(o.series, []).append(o)
    out: dict[str, list[tuple[int, Observation]]] = {}
    for s, obs in by_series.items():
        if step_s is None:
            # A series keyed to one partition: offset order. Spread over several (unkeyed
            # producers): the records' timestamps are the best order there is.
            one_partition = len({o.arrival[1] for o in obs}) == 1
            obs.sort(key=(lambda o: o.arrival[2]) if one_partition else (lambda o: o.arrival))
            out[s] = list(enumerate(obs))
            continue
        tol = tolerance_s if tolerance_s is not None else step_s / 2.0
        obs.sort(key=lambda o: (o.ts, o.arrival))
        t0 = obs[0].ts
        seen: set[int] = set()
        seq = []
        for o in obs:
            k = round((o.ts - t0) / step_s)
            if abs(o.ts - (t0 + k * step_s)) > tol or k in seen:
                continue  # off the grid, or a duplicate step (keep_first)
            seen.add(k)
            seq.append((k, o))
        out[s] = seq
    return out


def examples(
    decoded: Decoded,
    window: int,
    horizon: int,
    target_index: int | None,
    *,
    join_by: str,
    actuals_by_id: dict[str, np.ndarray] | None = None,
    actuals_by_time: dict[tuple[str, int], float] | None = None,
    from_input: bool = False,
    step_s: float | None = None,
    tolerance_s: float | None = None,
) -> list[Example]:
    """Every full window with a known target, in arrival order of the event that ended it."""
    seqs = series_sequences(decoded.observations, step_s, tolerance_s)
    truth = actuals_by_time or {}
    if from_input:
        if target_index is None:
            raise ValueError("actuals_from_input needs the target among the features")
        truth = {}
        for seq in seqs.values():
            for _, o in seq:
                truth.setdefault((o.series, _ms(o.ts)), float(o.values[target_index]))
    out: list[Example] = []
    for series, seq in seqs.items():
        for i in range(window - 1, len(seq)):
            first_pos, _ = seq[i - window + 1]
            end_pos, end = seq[i]
            if step_s is not None and end_pos - first_pos != window - 1:
                continue  # spans a missing step
            if join_by == "id":
                y = (actuals_by_id or {}).get(end.id)
                if y is None:
                    continue
            else:
                if step_s is None:
                    raise ValueError('join_by = "time" needs the bundle\'s frequency')
                ys = [truth.get((series, _ms(end.ts + k * step_s))) for k in range(1, horizon + 1)]
                if any(v is None for v in ys):
                    continue
                y = np.array(ys, dtype=np.float64)
            x = np.stack([o.values for _, o in seq[i - window + 1 : i + 1]])
            out.append(Example(x, np.asarray(y, np.float64), end.arrival, series, end_pos))
    if join_by == "id":
        for eid, w, arrival in decoded.windowed:
            y = (actuals_by_id or {}).get(eid)
            if y is not None:
                out.append(Example(w, y, arrival))
    out.sort(key=lambda e: e.arrival)
    return out


def split(exs: list[Example], holdout: int, horizon: int) -> tuple[list[Example], list[Example]]:
    """(train, holdout): the `holdout` newest windows by arrival, and the older ones whose
    targets none of the holdout's targets overlap (in a series, a training window ends at least
    `horizon` positions before its first holdout window)."""
    if holdout <= 0 or len(exs) <= holdout:
        return [], list(exs)
    hold = exs[-holdout:]
    first: dict[str, int] = {}
    for e in hold:
        if e.series is not None and e.pos is not None:
            first[e.series] = min(first.get(e.series, e.pos), e.pos)
    train = [
        e
        for e in exs[:-holdout]
        if e.series is None or e.pos is None or e.series not in first or e.pos <= first[e.series] - horizon
    ]
    return train, hold


def stack(exs: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    if not exs:
        return np.zeros((0, 0, 0)), np.zeros((0, 0))
    return np.stack([e.x for e in exs]), np.stack([e.y for e in exs])
