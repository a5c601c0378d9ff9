#!/usr/bin/env python3
"""A first version that the retrainer can retrain: a bundle whose `metadata.recipe` says how it
was trained, built with streamcast_bundle.

    .venv/bin/python python/examples/retrainer_seed.py --root /tmp/models --name co2-mlp \\
        --rows 0:1600 --recipe '{"kind": "sklearn-mlp", "hidden": [16], "alpha": 0.01, "seed": 0}'

Trains on windows of consecutive rows of data/co2_weekly.csv (features co2, month_sin,
month_cos; target: next week's co2) with exactly the retrainer's own recipe code
(`streamcast_retrainer.recipe`), so the next version is trained the same way. Prints the bundle
directory and its validation numbers (the last 20 % of the windows, never trained on) as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # python/: streamcast_bundle and streamcast_retrainer

from streamcast_bundle import from_sklearn  # noqa: E402
from streamcast_retrainer import recipe as R  # noqa: E402
from streamcast_retrainer.serving import ServedBundle, scores  # noqa: E402

FEATURES = ["co2", "month_sin", "month_cos"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--name", default="co2-mlp")
    p.add_argument("--version", default=None, help="default: the next free version")
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "data" / "co2_weekly.csv")
    p.add_argument("--rows", default="0:1600", help="START:END rows of the CSV to train and validate on")
    p.add_argument("--window", type=int, default=24)
    p.add_argument("--recipe", default='{"kind": "sklearn-mlp"}', help="JSON recipe (see streamcast_retrainer/README.md)")
    p.add_argument("--check", choices=["auto", "always", "never"], default="auto")
    args = p.parse_args(argv)

    with args.data.open() as f:
        rows = np.array([[float(r[c]) for c in FEATURES] for r in csv.DictReader(f)], dtype=np.float64)
    start, end = (int(v) if v else None for v in args.rows.split(":"))
    rows = rows[start:end]
    t = args.window
    x = np.stack([rows[i : i + t] for i in range(len(rows) - t)])  # [n, T, F] raw
    y = rows[t:, :1]  # next week's co2, [n, 1]
    n_train = int(len(x) * 0.8)
    x_tr, y_tr, x_va, y_va = x[:n_train], y[:n_train], x[n_train + 1 :], y[n_train + 1 :]

    recipe = R.effective(json.loads(args.recipe))
    scaler = R.StandardScalerSpec.fit(x_tr.reshape(-1, len(FEATURES)))
    t_scaler = R.StandardScalerSpec.fit(y_tr)
    est, info = R.fit(recipe, scaler.transform(x_tr).reshape(n_train, -1), t_scaler.transform(y_tr))
    z_va = scaler.transform(x_va).reshape(len(x_va), -1)
    pred = np.asarray(est.predict(z_va), np.float64).reshape(-1, 1) * t_scaler.std + t_scaler.mean
    val = scores(pred, y_va)

    check, binary = True, None
    if args.check != "always":
        from streamcast_bundle import BundleError
        from streamcast_bundle.core import find_streamcast

        try:
            binary = find_streamcast()
        except BundleError:
            if args.check == "auto":
                check = False
        if args.check == "never":
            check = False
    path = from_sklearn(
        est,
        scaler.spec(),
        x_tr,
        root=args.root,
        name=args.name,
        features=FEATURES,
        window=t,
        horizon=1,
        target="co2",
        target_scaler=t_scaler.spec(),
        version=args.version,
        validation={"rmse": val["rmse"], "mae": val["mae"]},
        metadata={"recipe": recipe, "trained_on": {"data": args.data.name, "rows": args.rows, "fit": info}},
        check=check,
        streamcast=binary,
    )
    served = scores(ServedBundle(Path(path)).predict(x_va), y_va)
    print(json.dumps({"bundle": str(path), "validation": val, "served_validation": served, "fit": info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
