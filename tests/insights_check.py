#!/usr/bin/env python3
"""Checks `streamflix report --format json` against scipy and pandas computed from the CSVs.

Usage: python tests/insights_check.py --report REPORT.json --data CSVDIR

Everything here comes from the MovieLens CSV files alone (movies.csv, ratings.csv, tags.csv),
by the definitions in docs/insights.md, never from the processor's state: rating values per
genre, sessions (a pause of 30 minutes or more starts a new one; span = last − first event;
"touched" genres = genres of the movies rated or tagged in it), and per user the number and
mean of ratings and the days from the last activity to the report's `as_of`; per movie the
number and mean of ratings; per user the first session (its mean rating, its most-rated genre
with ties to the alphabetically first, the start of the next session) and the calendar months
with activity. The tests are scipy's: ttest_ind(equal_var=False), f_oneway, pearsonr,
spearmanr, chi2_contingency(correction=False). Statistics must agree within
1e-9 relative, p-values within 1e-6 relative (or 1e-300 absolute), counts exactly. One line per
check; exit status 1 if any failed.
"""
import argparse
import json
import math
import sys

import numpy as np
import pandas as pd
from scipy import stats

SESSION_GAP = 1_800
DAY = 86_400
NO_GENRES = "(no genres listed)"
RETURN_DAYS = 30
MIN_GENRE_USERS = 30

failed = []


def check(name, got, want, kind):
    if kind == "count":
        ok = got == want
    elif kind == "p":
        ok = abs(got - want) <= 1e-300 or abs(got - want) <= 1e-6 * abs(want)
    else:
        ok = got == want or abs(got - want) <= 1e-9 * abs(want)
    if not ok:
        failed.append(name)
        print(f"FAIL {name}: streamflix {got!r}, scipy/pandas {want!r}")
    return ok


def welch(name, c, a, b):
    """Checks a report comparison `c` against scipy on samples a (first group) and b."""
    r = stats.ttest_ind(a, b, equal_var=False)
    ok = all([
        check(f"{name}.n_a", c["n_a"], len(a), "count"),
        check(f"{name}.n_b", c["n_b"], len(b), "count"),
        check(f"{name}.mean_a", c["mean_a"], float(np.mean(a)), "stat"),
        check(f"{name}.mean_b", c["mean_b"], float(np.mean(b)), "stat"),
        check(f"{name}.t", c["t"], float(r.statistic), "stat"),
        check(f"{name}.df", c["df"], float(r.df), "stat"),
        check(f"{name}.p", c["p"], float(r.pvalue), "p"),
    ])
    if ok:
        print(f"ok {name}: n = {len(a)} / {len(b)}, t = {c['t']:.4f}, p = {c['p']:.3e}")


def corr(name, c, x, y):
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    ok = all([
        check(f"{name}.n", c["pearson"]["n"], len(x), "count"),
        check(f"{name}.pearson.r", c["pearson"]["r"], float(p.statistic), "stat"),
        check(f"{name}.pearson.p", c["pearson"]["p"], float(p.pvalue), "p"),
        check(f"{name}.pearson.df", c["pearson"]["df"], len(x) - 2, "count"),
        check(f"{name}.spearman.rho", c["spearman"]["rho"], float(s.statistic), "stat"),
        check(f"{name}.spearman.p", c["spearman"]["p"], float(s.pvalue), "p"),
    ])
    if ok:
        print(f"ok {name}: n = {len(x)}, r = {c['pearson']['r']:.4f}, rho = {c['spearman']['rho']:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    rep = json.load(open(a.report))
    movies = pd.read_csv(f"{a.data}/movies.csv")
    ratings = pd.read_csv(f"{a.data}/ratings.csv").rename(
        columns={"userId": "user_id", "movieId": "movie_id", "timestamp": "ts"})
    tags = pd.read_csv(f"{a.data}/tags.csv").rename(
        columns={"userId": "user_id", "movieId": "movie_id", "timestamp": "ts"})
    genres_of = {m: [g for g in gs.split("|") if g != NO_GENRES] for m, gs in zip(movies.movieId, movies.genres)}

    # Rating values per genre.
    by_genre = {}
    for m, v in zip(ratings.movie_id, ratings.rating):
        for g in genres_of[m]:
            by_genre.setdefault(g, []).append(v)
    welch("action_vs_drama.ratings", rep["action_vs_drama"]["ratings"],
          np.array(by_genre["Action"]), np.array(by_genre["Drama"]))
    anova = rep["anova_genres"]["ratings"]
    names = [g["name"] for g in anova["genres"] if g["n"] > 0]
    check("anova.genres", sorted(names), sorted(by_genre), "count")
    for g in anova["genres"]:
        if g["n"] > 0:
            check(f"anova.{g['name']}.n", g["n"], len(by_genre[g["name"]]), "count")
            check(f"anova.{g['name']}.mean", g["mean"], float(np.mean(by_genre[g["name"]])), "stat")
    r = stats.f_oneway(*[np.array(by_genre[n]) for n in names])
    ok = all([check("anova.f", anova["f"], float(r.statistic), "stat"),
              check("anova.p", anova["p"], float(r.pvalue), "p"),
              check("anova.df_within", anova["df_within"], float(sum(len(by_genre[n]) for n in names) - len(names)), "count")])
    if ok:
        print(f"ok anova_genres.ratings: {len(names)} genres, F = {anova['f']:.4f}, p = {anova['p']:.3e}")

    # Sessions over ratings and tags.
    # Ratings and tags (rating NaN), by user and time.
    events = pd.concat([ratings[["user_id", "movie_id", "ts", "rating"]],
                        tags[["user_id", "movie_id", "ts"]].assign(rating=np.nan)],
                       ignore_index=True).sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    new = (events.user_id != events.user_id.shift()) | (events.ts - events.ts.shift() >= SESSION_GAP)
    events["session"] = new.cumsum()
    events["action"] = [("Action" in genres_of[m]) for m in events.movie_id]
    events["drama"] = [("Drama" in genres_of[m]) for m in events.movie_id]
    s = events.groupby("session").agg(start=("ts", "min"), end=("ts", "max"), events=("ts", "size"),
                                      action=("action", "any"), drama=("drama", "any"))
    # Closed sessions only: at the end of the input, a session whose gap has not passed the
    # final watermark (the report's as_of) is still open.
    s = s[s.end + SESSION_GAP <= rep["as_of"]].copy()
    s["minutes"] = (s.end - s.start) / 60.0
    s["weekend"] = pd.to_datetime(s.start, unit="s", utc=True).dt.day_of_week >= 5
    welch("action_vs_drama.session_minutes", rep["action_vs_drama"]["session_minutes"],
          s[s.action & ~s.drama].minutes.to_numpy(), s[s.drama & ~s.action].minutes.to_numpy())
    welch("weekend_vs_weekday.session_minutes", rep["weekend_vs_weekday"]["session_minutes"],
          s[s.weekend].minutes.to_numpy(), s[~s.weekend].minutes.to_numpy())
    welch("weekend_vs_weekday.session_events", rep["weekend_vs_weekday"]["session_events"],
          s[s.weekend].events.to_numpy(dtype=float), s[~s.weekend].events.to_numpy(dtype=float))

    # Users with ratings.
    as_of = rep["as_of"]
    last = events.groupby("user_id").ts.max()
    u = ratings.groupby("user_id").rating.agg(["size", "mean"]).sort_index()
    recency = ((as_of - last.loc[u.index]).clip(lower=0) / DAY).to_numpy()
    check("users_with_ratings", rep["users_with_ratings"], len(u), "count")
    corr("correlations.rating_vs_frequency", rep["correlations"]["rating_vs_frequency"],
         u["mean"].to_numpy(), u["size"].to_numpy(dtype=float))
    corr("correlations.recency_vs_rating", rep["correlations"]["recency_vs_rating"],
         recency, u["mean"].to_numpy())

    # Highly rated titles: movies with >= 20 ratings, (mean rating, number of ratings).
    mv = ratings.groupby("movie_id").rating.agg(["size", "mean"])
    mv = mv[mv["size"] >= 20]
    hre = rep["highly_rated_engagement"]
    corr("highly_rated_engagement.movies", hre["movies"], mv["mean"].to_numpy(), mv["size"].to_numpy(dtype=float))

    # First sessions (over every session, closed or not: a user's first closed long ago).
    sess = events.groupby("session").agg(user_id=("user_id", "first"), start=("ts", "min"), end=("ts", "max"))
    sess["n"] = sess.groupby("user_id").cumcount()
    first = sess[sess.n == 0].set_index("user_id")
    second = sess[sess.n == 1].set_index("user_id")
    fe = events[events.session.isin(set(sess.index[sess.n == 0])) & events.rating.notna()]
    first_mean = fe.groupby("user_id").rating.mean()
    top = {}
    for uid, grp in fe.groupby("user_id"):
        counts = {}
        for m in grp.movie_id:
            for g in genres_of[m]:
                counts[g] = counts.get(g, 0) + 1
        top[uid] = min(counts, key=lambda g: (-counts[g], g)) if counts else None
    limit = RETURN_DAYS * DAY

    def month(ts):
        d = pd.to_datetime(ts, unit="s", utc=True)
        return d.dt.year * 12 + d.dt.month - 1

    as_of_month = int(month(pd.Series([as_of])).iloc[0])
    signup_month = month(events.groupby("user_id").ts.min())
    events["k"] = month(events.ts).to_numpy() - signup_month.loc[events.user_id].to_numpy()
    active3 = set(events.user_id[events.k == 3])
    high, low, rows = [], [], {}
    for uid in first_mean.index:
        end = int(first.loc[uid, "end"])
        back = uid in second.index and int(second.loc[uid, "start"]) <= end + limit
        if end + limit <= as_of:
            (high if first_mean[uid] >= 4.0 else low).append(float(back))
        g = top[uid]
        if g is None:
            continue
        r = rows.setdefault(g, [0, 0, 0, 0])
        if end + limit <= as_of:
            r[0] += 1
            r[1] += int(back)
        if as_of_month > int(signup_month[uid]) + 3:
            r[2] += 1
            r[3] += int(uid in active3)
    welch("highly_rated_engagement.first_session_rating", hre["first_session_rating"], np.array(high), np.array(low))
    gr = rep["genre_retention"]
    want_rows = {g: r for g, r in rows.items() if r[0] >= MIN_GENRE_USERS}
    got_rows = {r["genre"]: [r["users"], r["returned"], r["month3_users"], r["month3_active"]] for r in gr["genres"]}
    ok = check("genre_retention.rows", got_rows, want_rows, "count")
    names = [r["genre"] for r in gr["genres"]]
    table = np.array([[want_rows[g][1], want_rows[g][0] - want_rows[g][1]] for g in names])
    c = stats.chi2_contingency(table, correction=False)
    ok = all([ok, check("genre_retention.chi2", gr["test"]["chi2"], float(c.statistic), "stat"),
              check("genre_retention.df", gr["test"]["df"], float(c.dof), "count"),
              check("genre_retention.p", gr["test"]["p"], float(c.pvalue), "p")])
    if ok:
        print(f"ok genre_retention: {len(names)} genres, chi2 = {gr['test']['chi2']:.4f}, p = {gr['test']['p']:.3e}")

    # Ratings and closed sessions per active week (UTC, Monday to Sunday).
    week = lambda ts: (ts // DAY + 3) // 7
    wr = ratings.ts.map(week).value_counts()
    ws = s.start.map(week).value_counts()
    weeks = pd.DataFrame({"ratings": wr, "sessions": ws}).fillna(0).astype(int).sort_index()
    wa = rep["weekly_activity"]
    got = [(w["start"], w["ratings"], w["sessions"]) for w in wa["weeks"]]
    want = [(pd.Timestamp((int(k) * 7 - 3) * DAY, unit="s").strftime("%Y-%m-%d"), int(r.ratings), int(r.sessions))
            for k, r in weeks.iterrows()]
    ok = all([check("weekly_activity.weeks", got, want, "count"),
              check("weekly_activity.active_weeks", wa["active_weeks"], len(weeks), "count"),
              check("weekly_activity.ratings.mean", wa["ratings"]["mean"], float(weeks.ratings.mean()), "stat"),
              check("weekly_activity.ratings.median", wa["ratings"]["median"], float(weeks.ratings.median()), "stat"),
              check("weekly_activity.sessions.mean", wa["sessions"]["mean"], float(weeks.sessions.mean()), "stat"),
              check("weekly_activity.sessions.median", wa["sessions"]["median"], float(weeks.sessions.median()), "stat")])
    if ok:
        print(f"ok weekly_activity: {len(weeks)} weeks, ratings per week mean {wa['ratings']['mean']:.2f}")

    # Counts.
    dist = [n for _, n in rep["rating_distribution"]]
    want = [int((ratings.rating == v / 2).sum()) for v in range(1, 11)]
    if check("rating_distribution", dist, want, "count"):
        print("ok rating_distribution")
    for f in ["action_vs_drama", "weekend_vs_weekday", "anova_genres", "correlations", "highly_rated_engagement"]:
        for k, v in rep[f].items():
            text = v and (v.get("conclusion") or "")
            if not text:
                failed.append(f"{f}.{k}.conclusion")
                print(f"FAIL {f}.{k}: no conclusion")
    print("FAILED: " + ", ".join(failed) if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
