#!/usr/bin/env python3
"""Golden values for `analytics::stats` from scipy (regenerate: python3 tests/stats_golden.py).

Writes tests/data/stats_golden.json. The samples are not stored: both sides compute them from
the same formula in IEEE double arithmetic (`sample` below and `golden_sample` in
src/analytics/stats.rs), so the Rust test rebuilds identical inputs.
"""
import json
import math
import os

import numpy as np
import scipy
from scipy import stats


def sample(seed, n, mean, sd, ties=False):
    a = 0.6180339887498949 + seed * 0.0137
    b = 0.7548776662466927 + seed * 0.0071
    c = 0.5698402909980532 + seed * 0.0029
    i = np.arange(1, n + 1, dtype=np.float64)
    x = mean + sd * (((i * a) % 1.0) + ((i * b) % 1.0) + ((i * c) % 1.0) - 1.5) * 2.0
    if ties:
        x = np.floor(x * 2.0 + 0.5) / 2.0
    return x


def main():
    out = {"scipy": scipy.__version__, "welch": [], "anova": [], "pearson": [], "spearman": [],
           "chi2": [], "t_sf": [], "f_sf": [], "chi2_sf": []}
    # Welch: tiny, unequal, huge (large df), equal means.
    for (s1, n1, m1, sd1), (s2, n2, m2, sd2) in [
        ((1, 2, 3.0, 1.0), (2, 3, 3.5, 0.5)),
        ((3, 5, 10.0, 2.0), (4, 40, 11.0, 5.0)),
        ((5, 100, 3.5, 1.0), (6, 120, 3.4, 1.1)),
        ((7, 1000, 0.0, 1.0), (8, 1000, 0.0, 1.0)),
        ((9, 200000, 3.52, 1.05), (10, 300000, 3.51, 0.98)),
        ((11, 2000000, 50.0, 30.0), (12, 1500000, 50.1, 31.0)),
    ]:
        a, b = sample(s1, n1, m1, sd1), sample(s2, n2, m2, sd2)
        r = stats.ttest_ind(a, b, equal_var=False)
        va, vb = a.var(ddof=1) / n1, b.var(ddof=1) / n2
        df = (va + vb) ** 2 / (va ** 2 / (n1 - 1) + vb ** 2 / (n2 - 1))
        out["welch"].append({"a": [s1, n1, m1, sd1], "b": [s2, n2, m2, sd2], "t": float(r.statistic),
                             "df": float(df), "p": float(r.pvalue)})
    # One-way ANOVA: 2 groups (F = t²), many groups, tiny, huge.
    for groups in [
        [(1, 3, 1.0, 1.0), (2, 4, 2.0, 1.0)],
        [(3, 10, 3.0, 1.0), (4, 12, 3.2, 1.0), (5, 9, 3.9, 1.5)],
        [(6 + g, 200 + 37 * g, 3.4 + 0.01 * g, 1.0) for g in range(19)],
        [(30 + g, 150000 + 9000 * g, 3.5 + 0.002 * g, 1.0) for g in range(18)],
    ]:
        xs = [sample(*g) for g in groups]
        r = stats.f_oneway(*xs)
        n = sum(len(x) for x in xs)
        out["anova"].append({"groups": [list(g) for g in groups], "f": float(r.statistic),
                             "df_between": len(xs) - 1, "df_within": n - len(xs), "p": float(r.pvalue)})
    # Correlations: y = x·slope + noise, with and without ties.
    for seed, n, slope, ties in [(1, 3, 1.0, False), (2, 10, 0.3, False), (3, 10, 0.3, True),
                                 (4, 500, -0.05, True), (5, 5000, 0.02, False), (6, 400000, 0.004, True)]:
        x = sample(seed, n, 3.5, 1.0, ties)
        y = x * slope + sample(seed + 100, n, 2.0, 1.0, ties)
        p = stats.pearsonr(x, y)
        s = stats.spearmanr(x, y)
        out["pearson"].append({"seed": seed, "n": n, "slope": slope, "ties": ties,
                               "r": float(p.statistic), "p": float(p.pvalue)})
        out["spearman"].append({"seed": seed, "n": n, "slope": slope, "ties": ties,
                                "rho": float(s.statistic), "p": float(s.pvalue)})
    # Chi-square tests of independence, no continuity correction.
    for table in [[[10, 20], [30, 25]], [[3, 7, 9], [12, 4, 5]],
                  [[120, 80], [95, 105], [60, 140], [300, 310], [33, 31]],
                  [[150000, 140000], [60000, 63000], [9000, 8000]]]:
        chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
        out["chi2"].append({"table": table, "chi2": float(chi2), "df": int(dof), "p": float(p)})
    # The distributions around the switch to their limits (df 1e8 for t, 1e9 for F).
    for df in [3.0, 1e5, 1e7, 1e8, 1.5e8, 1e9, 1e10, 1e12]:
        for t in [0.3, 2.0, 5.0, 12.0, 30.0]:
            out["t_sf"].append({"t": t, "df": df, "p": float(stats.t.sf(t, df))})
    for d1, d2 in [(2.0, 50.0), (18.0, 1e6), (18.0, 1e8), (18.0, 1e9), (18.0, 2e9), (18.0, 1e10), (5.0, 1e12)]:
        for f in [0.5, 1.5, 3.0, 10.0, 40.0]:
            out["f_sf"].append({"f": f, "d1": d1, "d2": d2, "p": float(stats.f.sf(f, d1, d2))})
    for k in [1.0, 4.0, 17.0, 1000.0]:
        for x in [0.5, 1.0, 2.0, 4.0]:
            out["chi2_sf"].append({"x": x * k, "k": k, "p": float(stats.chi2.sf(x * k, k))})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "stats_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
