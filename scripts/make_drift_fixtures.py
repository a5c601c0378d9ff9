#!/usr/bin/env python3
"""Generate tests/fixtures/drift/ks_psi.json for src/monitor/stats.rs.

Run from the repository root with the project venv:

    .venv/bin/python scripts/make_drift_fixtures.py

Everything is seeded, so re-running reproduces the file byte for byte (given the
same numpy/scipy versions, which are recorded in the output).

Contents:
- "ks_psi": pairs of samples (a = reference, b = current) with
  scipy.stats.ks_2samp(a, b, method="asymp") statistic / two-sided p-value and the
  PSI of b against a from an independent numpy implementation of the binning rules
  documented in stats.rs (reference-quantile edges via np.quantile, deduplicated,
  right-closed bins, proportions floored at 1e-4).
- "kstwo_sf": (n, x, scipy.stats.kstwo.sf(x, n)) over a grid that reaches every
  branch of scipy's Simard-L'Ecuyer dispatch (_ksstats._kolmogn), because the
  "asymp" two-sample p-value is kstwo.sf(D, round(n*m/(n+m))).
- "multiple_testing": p-values with scipy false_discovery_control (BH), checked
  against statsmodels multipletests(fdr_bh), and statsmodels Bonferroni.

Sample values are rounded to 4 decimals before anything is computed, so the JSON
text is exactly the data scipy saw and the file stays small.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import scipy
from scipy import stats

EPS = 1e-4
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "drift" / "ks_psi.json"


def psi_numpy(reference, current, bins):
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    qs = np.arange(1, bins) / bins
    edges = np.unique(np.quantile(reference, qs)) if bins > 1 else np.array([])
    # side="left": a value equal to an edge falls in the bin that edge closes (right-closed bins).
    k = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=k)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="left"), minlength=k)
    p_ref = np.maximum(ref_counts / len(reference), EPS)
    p_cur = np.maximum(cur_counts / len(current), EPS)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref))), int(k)


def r4(x):
    return [float(v) for v in np.round(np.asarray(x, dtype=float), 4)]


def ks_cases():
    cases = []

    def add(name, a, b, bins=10):
        a, b = r4(a), r4(b)
        res = stats.ks_2samp(a, b, method="asymp")
        psi, nbins = psi_numpy(a, b, bins)
        n, m = sorted([float(len(a)), float(len(b))], reverse=True)
        cases.append(
            {
                "name": name,
                "a": a,
                "b": b,
                "bins": bins,
                "ks_statistic": float(res.statistic),
                "ks_p_value": float(res.pvalue),
                "kstwo_n": int(np.round(n * m / (n + m))),
                "psi": psi,
                "psi_effective_bins": nbins,
            }
        )

    rng = np.random.default_rng(20240601)
    add("tiny_normal_5_vs_7", rng.normal(0, 1, 5), rng.normal(0.5, 1, 7), bins=4)
    same = rng.normal(10, 2, 50)
    add("identical_50", same, same.copy())
    add("shifted_normal_500", rng.normal(0, 1, 500), rng.normal(0.3, 1, 500))
    add("scale_change_2000_vs_300", rng.normal(0, 1, 2000), rng.normal(0, 1.5, 300), bins=20)
    add("poisson_ties_200_vs_150", rng.poisson(3, 200), rng.poisson(3.5, 150))
    # 70% of the reference is exactly 0: most quantile edges coincide and must be deduplicated.
    ref = np.where(rng.random(400) < 0.7, 0.0, rng.exponential(1.0, 400))
    cur = np.where(rng.random(300) < 0.4, 0.0, rng.exponential(1.5, 300))
    add("zero_inflated_ties_400_vs_300", ref, cur)
    add("large_shift_100_vs_80", rng.normal(0, 1, 100), rng.normal(3, 1, 80))
    add("uniform_vs_beta_1000", rng.uniform(0, 1, 1000), rng.beta(1.2, 1.0, 1000))
    add("same_dist_2000_vs_1500", rng.normal(5, 1, 2000), rng.normal(5, 1, 1500))
    add("disjoint_20_vs_30", rng.uniform(0, 1, 20), rng.uniform(2, 3, 30), bins=5)
    return cases


def kstwo_grid():
    ns = [1, 2, 3, 5, 10, 37, 100, 140, 141, 500, 1000, 5000, 100000, 100001, 2000000]
    rows = []
    for n in ns:
        xs = {
            0.4 / n,
            0.75 / n,
            1.0 / n,
            1.5 / n,
            math.sqrt(0.3 / n),
            math.sqrt(0.7 / n),
            math.sqrt(1.0 / n),
            math.sqrt(2.0 / n),
            math.sqrt(3.0 / n),
            math.sqrt(5.0 / n),
            math.sqrt(10.0 / n),
            math.sqrt(30.0 / n),
            (1.0 / n) ** (2.0 / 3.0),
            1.5 * (1.4 / n) ** (2.0 / 3.0),
            0.7 * (1.4 / n) ** (2.0 / 3.0),
            0.05,
            0.1,
            0.3,
            0.49,
            0.5,
            0.7,
            1.0 - 1.0 / n,
            1.0 - 0.5 / n,
            0.999,
            1.0,
        }
        for x in sorted(xs):
            if not (0.0 <= x <= 1.0):
                continue
            rows.append({"n": n, "x": x, "sf": float(stats.kstwo.sf(x, n))})
    return rows


def multiple_testing():
    from statsmodels.stats.multitest import multipletests

    cases = []
    lists = [
        [0.01, 0.04, 0.03, 0.005, 0.5, 0.2, 0.03, 0.9, 0.0001, 1.0],
        [0.5, 0.6, 0.1, 0.001],
        # Armitage example used in scipy's docstring (already sorted).
        [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
         0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000],
        [0.04],
        list(np.round(np.random.default_rng(7).uniform(0, 0.2, 40), 6)),
    ]
    for ps in lists:
        ps = [float(p) for p in ps]
        bh = stats.false_discovery_control(ps)
        _, bh_sm, _, _ = multipletests(ps, method="fdr_bh")
        assert np.allclose(bh, bh_sm, rtol=0, atol=1e-15), (bh, bh_sm)
        _, bonf, _, _ = multipletests(ps, method="bonferroni")
        cases.append({"p_values": ps, "bh": [float(v) for v in bh], "bonferroni": [float(v) for v in bonf]})
    return cases


def main():
    doc = {
        "generator": "scripts/make_drift_fixtures.py",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__},
        "psi_epsilon": EPS,
        "ks_psi": ks_cases(),
        "kstwo_sf": kstwo_grid(),
        "multiple_testing": multiple_testing(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1)
    # Keep numeric arrays on one line: the samples are long and one number per line is unreadable.
    text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + ",".join(m.group(1).split()) + "]", text)
    text = text.replace(",,", ",")
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    for c in doc["ks_psi"]:
        print(f"  {c['name']:32s} D={c['ks_statistic']:.6f} p={c['ks_p_value']:.3e} n={c['kstwo_n']} "
              f"psi={c['psi']:.5f} bins={c['psi_effective_bins']}")


if __name__ == "__main__":
    main()
