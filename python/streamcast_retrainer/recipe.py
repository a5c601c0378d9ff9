"""Recipes: how a version was trained, recorded in its bundle so the next one is trained alike.

A bundle's `metadata.recipe` (format version 1):

    {"kind": "sklearn-mlp", "hidden": [16], "alpha": 0.01, "max_iter": 500, "seed": 0}
    {"kind": "sklearn-ridge", "alpha": 1.0}

Every key but `kind` is optional (defaults below); an unknown key is an error, so a typo never
trains silently with a default. The training set is fixed by the bundle itself (`features`,
`window`, `horizon`, `target`): inputs are the `window` newest observations of a series, flat
and time-major, standardized; targets are the `horizon` actuals that followed, standardized.
`scaler` / `target_scaler` say whether those standard scalers are fitted again on the new
training windows (`"refit"`, the default: a shifted series gets a scaler that fits it) or copied
from the serving bundle (`"keep"`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

RECIPE_FORMAT = 1

COMMON = {"scaler": "refit", "target_scaler": "refit"}

DEFAULTS: dict[str, dict[str, Any]] = {
    "sklearn-mlp": {
        "hidden": [16],
        "activation": "relu",
        "solver": "adam",
        "alpha": 1e-2,
        "learning_rate_init": 1e-3,
        "batch_size": "auto",
        "max_iter": 500,
        "tol": 1e-5,
        "n_iter_no_change": 20,
        "early_stopping": False,
        "seed": 0,
        **COMMON,
    },
    "sklearn-ridge": {"alpha": 1.0, "fit_intercept": True, **COMMON},
}


class RecipeError(ValueError):
    """The recipe cannot be used."""


def effective(recipe: dict | None, override: dict | None = None) -> dict:
    """The bundle's recipe with `override` merged over it and the defaults filled in."""
    merged: dict[str, Any] = dict(recipe or {})
    merged.update(override or {})
    if not merged:
        raise RecipeError("the serving bundle records no `metadata.recipe` (and no override names a `kind`)")
    kind = merged.get("kind")
    if kind not in DEFAULTS:
        raise RecipeError(f"recipe kind {kind!r} is not one this retrainer trains ({', '.join(DEFAULTS)})")
    unknown = sorted(set(merged) - set(DEFAULTS[kind]) - {"kind", "format"})
    if unknown:
        raise RecipeError(f"unknown recipe key(s) for {kind}: {', '.join(unknown)}")
    out = {"kind": kind, "format": RECIPE_FORMAT, **DEFAULTS[kind]}
    out.update({k: v for k, v in merged.items() if k not in ("kind", "format")})
    for key in ("scaler", "target_scaler"):
        if out[key] not in ("refit", "keep"):
            raise RecipeError(f"recipe {key} must be `refit` or `keep`, not {out[key]!r}")
    if kind == "sklearn-mlp":
        hidden = out["hidden"]
        if not isinstance(hidden, list) or not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise RecipeError(f"recipe hidden must be a non-empty list of positive integers, not {hidden!r}")
        if not isinstance(out["max_iter"], int) or out["max_iter"] < 1:
            raise RecipeError("recipe max_iter must be a positive integer")
    return out


def make_estimator(recipe: dict):
    """An unfitted scikit-learn estimator for the recipe."""
    kind = recipe["kind"]
    if kind == "sklearn-mlp":
        from sklearn.neural_network import MLPRegressor

        return MLPRegressor(
            hidden_layer_sizes=tuple(recipe["hidden"]),
            activation=recipe["activation"],
            solver=recipe["solver"],
            alpha=float(recipe["alpha"]),
            learning_rate_init=float(recipe["learning_rate_init"]),
            batch_size=recipe["batch_size"],
            max_iter=int(recipe["max_iter"]),
            tol=float(recipe["tol"]),
            n_iter_no_change=int(recipe["n_iter_no_change"]),
            early_stopping=bool(recipe["early_stopping"]),
            random_state=int(recipe["seed"]),
        )
    if kind == "sklearn-ridge":
        from sklearn.linear_model import Ridge

        return Ridge(alpha=float(recipe["alpha"]), fit_intercept=bool(recipe["fit_intercept"]))
    raise RecipeError(f"recipe kind {kind!r}")


def fit(recipe: dict, x: np.ndarray, y: np.ndarray) -> tuple[Any, dict]:
    """Fits the recipe's estimator on standardized flat windows `x` [n, T*F] and standardized
    targets `y` [n, H]. Returns the estimator and facts about the fit (epochs, convergence)."""
    from sklearn.exceptions import ConvergenceWarning

    est = make_estimator(recipe)
    target = y[:, 0] if y.shape[1] == 1 else y
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(x, target)
    info: dict[str, Any] = {"converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught)}
    if hasattr(est, "n_iter_"):
        info["epochs"] = int(np.max(est.n_iter_))
    return est, info


class StandardScalerSpec:
    """A standard scaler as a bundle states it (`{"kind": "standard", "mean", "std"}`)."""

    def __init__(self, mean, std) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @classmethod
    def fit(cls, rows: np.ndarray) -> "StandardScalerSpec":
        """Population mean and std per column (as scikit-learn's StandardScaler); a constant
        column gets std 1."""
        rows = np.asarray(rows, dtype=np.float64)
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        # Rounded to 9 significant digits: what bundle.json holds is what training used.
        return cls([float(f"{v:.9g}") for v in mean], [float(f"{v:.9g}") for v in std])

    @classmethod
    def of(cls, spec: dict) -> "StandardScalerSpec":
        if spec.get("kind") == "standard":
            return cls(spec["mean"], spec["std"])
        if spec.get("kind") == "minmax":
            lo = np.asarray(spec["min"], dtype=np.float64)
            hi = np.asarray(spec["max"], dtype=np.float64)
            # (x - min) / (max - min) is a standard scaler with mean = min, std = max - min.
            return cls(lo, hi - lo)
        raise ValueError(f"unknown scaler kind {spec.get('kind')!r}")

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def spec(self) -> dict:
        return {"kind": "standard", "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    def to_sklearn(self):
        """A fitted sklearn StandardScaler with these parameters."""
        from sklearn.preprocessing import StandardScaler

        s = StandardScaler()
        n = len(self.mean)
        s.mean_ = self.mean.copy()
        s.scale_ = self.std.copy()
        s.var_ = self.std**2
        s.n_features_in_ = n
        s.n_samples_seen_ = np.int64(1)
        return s
