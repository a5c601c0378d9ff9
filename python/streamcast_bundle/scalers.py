"""Fitted scalers as bundle scaler specs.

streamcast normalizes every time step of a window with the bundle's `scaler`, one column per
feature, and de-normalizes the model output with `target.scaler` (src/normalize.rs):

* ``{"kind": "standard", "mean": m, "std": s}``: ``z = (x - m) / s``, ``x = z * s + m``;
* ``{"kind": "minmax", "min": lo, "max": hi}``: ``z = (x - lo) / (hi - lo)``,
  ``x = z * (hi - lo) + lo``.

scikit-learn's ``StandardScaler`` maps to the first form directly (``mean_``, ``scale_``; a
disabled ``with_mean``/``with_std`` becomes 0/1). ``MinMaxScaler`` computes
``z = x * scale_ + min_`` into ``feature_range = (a, b)``; the same affine map in streamcast's form
has width ``w = (hi - lo) = 1 / scale_`` and ``lo = data_min_ - a * w``, so a non-default
``feature_range`` converts exactly too (``lo``/``hi`` then lie outside the data's range).
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Optional

import numpy as np

from .errors import BundleError

SUPPORTED = "a fitted sklearn StandardScaler or MinMaxScaler, a bundle scaler dict, or None"


class Scaler:
    """A bundle scaler spec and the transform it stands for.

    ``transform`` and ``inverse`` use the fitted object's own methods when there is one (the
    training framework's numbers), else the spec's formula.
    """

    def __init__(self, spec: dict, fitted=None) -> None:
        self.spec = spec
        self.fitted = fitted
        if spec["kind"] == "standard":
            self.offset = np.asarray(spec["mean"], dtype=np.float64)
            self.scale = np.asarray(spec["std"], dtype=np.float64)
        else:
            self.offset = np.asarray(spec["min"], dtype=np.float64)
            self.scale = np.asarray(spec["max"], dtype=np.float64) - self.offset

    @property
    def columns(self) -> int:
        return len(self.offset)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalizes rows of ``columns`` values (any leading shape)."""
        x = np.asarray(x, dtype=np.float64)
        shape = x.shape
        flat = x.reshape(-1, self.columns)
        if self.fitted is not None:
            with warnings.catch_warnings():
                # A scaler fitted on a DataFrame warns about the missing feature names.
                warnings.simplefilter("ignore", UserWarning)
                out = np.asarray(self.fitted.transform(flat), dtype=np.float64)
        else:
            out = (flat - self.offset) / self.scale
        return out.reshape(shape)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """De-normalizes ``[N, H]`` model outputs; a one-column scaler applies to every step."""
        y = np.asarray(y, dtype=np.float64)
        shape = y.shape
        flat = y.reshape(-1, 1) if self.columns == 1 else y.reshape(-1, self.columns)
        if self.fitted is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = np.asarray(self.fitted.inverse_transform(flat), dtype=np.float64)
        else:
            out = flat * self.scale + self.offset
        return out.reshape(shape)


def identity(columns: int) -> dict:
    return {"kind": "standard", "mean": [0.0] * columns, "std": [1.0] * columns}


def _floats(values, what: str) -> list:
    arr = np.asarray(values, dtype=np.float64).ravel()
    for i, v in enumerate(arr):
        if not math.isfinite(v):
            raise BundleError(f"{what}[{i}] is {v}: scaler parameters must be finite")
    return [float(v) + 0.0 for v in arr]


def _check_widths(spec: dict, what: str) -> None:
    if spec["kind"] == "standard":
        widths = spec["std"]
        name = "std"
    else:
        widths = [hi - lo for lo, hi in zip(spec["min"], spec["max"])]
        name = "max - min"
    for i, w in enumerate(widths):
        # streamcast keeps the scale in float32 and needs it positive and normal.
        with np.errstate(over="ignore"):
            w32 = np.float32(w)
        if not (w > 0 and np.isfinite(w32) and w32 >= np.finfo(np.float32).tiny):
            raise BundleError(f"{what}: column {i} has {name} = {w}; it must be positive (and a normal float32)")


def spec_of(scaler, what: str = "scaler") -> dict:
    """The bundle spec of a fitted StandardScaler/MinMaxScaler or a spec dict (not None)."""
    if isinstance(scaler, dict):
        kind = scaler.get("kind")
        keys = {"standard": ("mean", "std"), "minmax": ("min", "max")}.get(kind)
        if keys is None:
            raise BundleError(f"{what}: a scaler dict needs \"kind\": \"standard\" or \"minmax\", got {kind!r}")
        extra = set(scaler) - {"kind", *keys}
        if extra or any(k not in scaler for k in keys):
            raise BundleError(f"{what}: a {kind} scaler dict has exactly the keys kind, {keys[0]}, {keys[1]}; got {sorted(scaler)}")
        a, b = (_floats(scaler[k], f"{what}.{k}") for k in keys)
        if len(a) != len(b) or not a:
            raise BundleError(f"{what}: {keys[0]} has {len(a)} values and {keys[1]} {len(b)}; they must match")
        spec = {"kind": kind, keys[0]: a, keys[1]: b}
        _check_widths(spec, what)
        return spec

    cls = type(scaler).__name__
    module = type(scaler).__module__ or ""
    if not module.startswith("sklearn."):
        raise BundleError(f"{what}: {module}.{cls} is not supported; pass {SUPPORTED}")
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if isinstance(scaler, StandardScaler):
        if not hasattr(scaler, "n_features_in_"):
            raise BundleError(f"{what}: the StandardScaler is not fitted")
        n = int(scaler.n_features_in_)
        mean = scaler.mean_ if scaler.with_mean else np.zeros(n)
        std = scaler.scale_ if scaler.with_std else np.ones(n)
        spec = {"kind": "standard", "mean": _floats(mean, f"{what}.mean"), "std": _floats(std, f"{what}.std")}
    elif isinstance(scaler, MinMaxScaler):
        if not hasattr(scaler, "n_features_in_"):
            raise BundleError(f"{what}: the MinMaxScaler is not fitted")
        if getattr(scaler, "clip", False):
            raise BundleError(f"{what}: MinMaxScaler(clip=True) clips to feature_range, which a bundle scaler cannot express; refit with clip=False")
        a, b = (float(v) for v in scaler.feature_range)
        s = np.asarray(scaler.scale_, dtype=np.float64)
        data_min = np.asarray(scaler.data_min_, dtype=np.float64)
        data_range = np.asarray(scaler.data_range_, dtype=np.float64)
        # The x-range that maps onto [a, b]: the data's own range, unless scikit-learn treated the
        # column as constant (then whatever scale_ it used).
        with np.errstate(divide="ignore", invalid="ignore"):
            fitted_range = np.where((data_range > 0) & (s == (b - a) / data_range), data_range, (b - a) / s)
        width = fitted_range / (b - a)  # x-units per unit of z: 1 / scale_
        lo = data_min - a * width
        hi = lo + width
        spec = {"kind": "minmax", "min": _floats(lo, f"{what}.min"), "max": _floats(hi, f"{what}.max")}
    else:
        raise BundleError(f"{what}: {cls} is not supported; pass {SUPPORTED}")
    _check_widths(spec, what)
    return spec


def convert(scaler, columns: Iterable[int], what: str = "scaler", identity_columns: Optional[int] = None) -> Scaler:
    """Converts ``scaler`` for a tensor of one of ``columns`` widths.

    ``None`` is the identity over ``identity_columns`` columns (a standard scaler with mean 0 and
    std 1: the model normalizes inside its own graph).
    """
    columns = tuple(columns)
    if scaler is None:
        return Scaler(identity(identity_columns if identity_columns is not None else columns[0]))
    spec = spec_of(scaler, what)
    n = len(spec["mean"] if spec["kind"] == "standard" else spec["min"])
    if n not in columns:
        want = " or ".join(str(c) for c in columns)
        raise BundleError(f"{what} has {n} columns; expected {want}")
    fitted = None if isinstance(scaler, dict) else scaler
    return Scaler(spec, fitted)


def check_exact(s: Scaler, x: np.ndarray, what: str, rtol: float = 1e-9) -> None:
    """Raises unless the spec's formula is the fitted scaler's own map on ``x`` (rows of
    ``columns`` values): forwards for an input scaler, and the inverse on a grid of normalized
    values. A guard on the conversion itself, whatever the scaler."""
    if s.fitted is None:
        return
    formula = Scaler(s.spec)
    checks = [("transform", s.transform(x), formula.transform(x))]
    z = np.tile(np.linspace(-3.0, 3.0, 13)[:, None], (1, s.columns))
    checks.append(("inverse_transform", s.inverse(z), formula.inverse(z)))
    for name, fitted, converted in checks:
        err = np.abs(fitted - converted) / np.maximum(1.0, np.abs(fitted))
        if err.max() > rtol:
            raise BundleError(
                f"{what}: the converted {s.spec['kind']} scaler differs from {type(s.fitted).__name__}.{name} "
                f"by {float(err.max()):.3g} (relative); this is a bug in streamcast_bundle's conversion"
            )
