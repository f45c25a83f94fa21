"""Checks `streamflix eval churn` against an independent computation (issue 19).

From the dataset's CSV files alone, it computes every user's activity pattern at the last day
(x = distinct active UTC days - 1, t_x = last - first active day, T = last day of the data -
first active day; an active day has a rating or a tag of a movie in movies.csv), then:

- the pattern histogram equals the one streamflix wrote (--patterns), exactly;
- the BG/NBD and MBG/NBD log-likelihoods, written term by term as published with
  scipy.special.gammaln, equal streamflix's at its fitted parameters within 1e-9 relative;
- P(alive) of every pattern under both models equals streamflix's within 1e-9;
- scipy.optimize.minimize, from the same spread starts, finds the same optimum: parameters within
  1e-4 relative, and no higher likelihood than streamflix's.

Prints one `ok ...` line per check; exits non-zero on the first failure.
"""

import argparse
import json
import sys

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import gammaln

DAY = 86400
SPREAD = [(0.5, 10.0, 0.5, 2.0), (1.0, 1.0, 1.0, 1.0), (0.1, 1.0, 2.0, 50.0), (2.0, 20.0, 0.3, 0.3)]


def patterns(data):
    movies = set(pd.read_csv(f"{data}/movies.csv")["movieId"])
    frames = [pd.read_csv(f"{data}/ratings.csv", usecols=["userId", "movieId", "timestamp"])]
    try:
        frames.append(pd.read_csv(f"{data}/tags.csv", usecols=["userId", "movieId", "timestamp"]))
    except FileNotFoundError:
        pass
    ev = pd.concat(frames)
    ev = ev[ev["movieId"].isin(movies)]
    ev["day"] = ev["timestamp"] // DAY
    last_day = int(ev["day"].max())
    per = ev.groupby("userId")["day"].agg(["min", "max", "nunique"])
    pat = pd.DataFrame(
        {"x": per["nunique"] - 1, "t_x": per["max"] - per["min"], "T": last_day - per["min"]}
    )
    hist = pat.groupby(["x", "t_x", "T"]).size().rename("users").reset_index()
    return hist.sort_values(["x", "t_x", "T"]).reset_index(drop=True)


def ll_bg(params, x, tx, T):
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + tx), -np.inf)
    return a1 + a2 + np.logaddexp(a3, a4)


def ll_mbg(params, x, tx, T):
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + x) - (r + x) * np.log(alpha + tx)
    return a1 + a2 + np.logaddexp(a3, a4)


def p_alive_bg(params, x, tx, T):
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(x > 0, a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
    return 1.0 / (1.0 + odds)


def p_alive_mbg(params, x, tx, T):
    r, alpha, a, b = params
    return 1.0 / (1.0 + a / (b + x) * ((alpha + T) / (alpha + tx)) ** (r + x))


def scipy_fit(ll, x, tx, T, n):
    total = n.sum()

    def objective(th):
        if np.any(np.abs(th) > 30):
            return np.inf
        v = -(n * ll(np.exp(th), x, tx, T)).sum() / total
        return v if np.isfinite(v) else np.inf

    best = None
    for start in SPREAD:
        res = minimize(objective, np.log(start), method="Nelder-Mead",
                       options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 40000, "maxfev": 80000})
        # Polish from there (a quasi-Newton step settles what the simplex left).
        res2 = minimize(objective, res.x, method="BFGS", options={"gtol": 1e-10})
        if np.isfinite(res2.fun) and res2.fun <= res.fun:
            res = res2
        if best is None or res.fun < best.fun:
            best = res
    return np.exp(best.x), -best.fun * total


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--report", required=True, help="eval churn's JSON")
    ap.add_argument("--patterns", required=True, help="eval churn's --patterns CSV")
    args = ap.parse_args()
    report = json.load(open(args.report))
    ours = pd.read_csv(args.patterns)
    theirs = patterns(args.data)
    fail = []

    def check(ok, what):
        print(("ok " if ok else "FAIL ") + what)
        if not ok:
            fail.append(what)

    same = ours[["x", "t_x", "T", "users"]].reset_index(drop=True).equals(theirs[["x", "t_x", "T", "users"]])
    check(same, f"histogram: {len(theirs)} patterns of {theirs['users'].sum()} users")
    if not same:
        sys.exit(1)
    x, tx, T, n = (theirs[c].to_numpy(dtype=float) for c in ["x", "t_x", "T", "users"])
    for key, ll, pa, col in [("bgnbd", ll_bg, p_alive_bg, "p_alive_bg"), ("mbgnbd", ll_mbg, p_alive_mbg, "p_alive_mbg")]:
        f = report[key]
        params = (f["r"], f["alpha"], f["a"], f["b"])
        total = float((n * ll(params, x, tx, T)).sum())
        check(rel(f["log_likelihood"], total) < 1e-9,
              f"{key} log-likelihood at streamflix's fit: {f['log_likelihood']:.10f} vs scipy.special {total:.10f}")
        pa_ours, pa_theirs = ours[col].to_numpy(), pa(params, x, tx, T)
        worst = float(np.max(np.abs(pa_ours - pa_theirs) / np.maximum(np.abs(pa_theirs), 1e-300)))
        check(worst < 1e-9, f"{key} P(alive) of {len(x)} patterns: worst relative difference {worst:.2e}")
        sp, sp_ll = scipy_fit(ll, x, tx, T, n)
        worst = max(rel(o, s) for o, s in zip(params, sp))
        check(worst < 1e-4 and f["log_likelihood"] >= sp_ll - 1e-6 * abs(sp_ll),
              f"{key} fit: streamflix {tuple(round(float(p), 6) for p in params)} ll {f['log_likelihood']:.6f}; "
              f"scipy {tuple(round(float(p), 6) for p in sp)} ll {sp_ll:.6f}; worst relative difference {worst:.2e}")
    sys.exit(1 if fail else 0)


if __name__ == "__main__":
    main()
