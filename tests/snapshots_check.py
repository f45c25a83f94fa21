#!/usr/bin/env python3
"""Checks a snapshot directory (the daily close's Parquet tables) and the queries in sql/.

Usage:
    python tests/snapshots_check.py --snapshots DIR --data CSVDIR --sql SQLDIR \
        --tables-doc docs/tables.md [--as-of YYYY-MM-DD ...] [--churn-model FILE]

1. Schemas. Every table present under DIR is read with pyarrow, one part file at a time, and
   each file's Arrow schema must equal the one documented in docs/tables.md (the `### \`name\``
   sections and their `- \`column: type\`` bullets; a trailing `?` marks a nullable column,
   every other column must be non-nullable): same column names, types, nullability and order.
   The hive column `dt` must not be stored in the files. All the documented tables must be
   present, each with at least one part file, and the files must follow the documented layout
   (`movies/part-0.parquet`; `<table>/dt=YYYY-MM-DD/part-<n>.parquet`).

2. Queries. Each of the eight queries in SQLDIR runs on DuckDB (in memory, with the variables
   `snapshots` and, for queries 3 and 6, `as_of`), and its result must equal the same answer
   computed here with pandas from the MovieLens CSVs in CSVDIR (movies.csv, ratings.csv,
   tags.csv): same columns, same rows in the same order; ids, counts, strings and dates exactly,
   means within a relative tolerance of 1e-9. The pandas side is independent of the processor:
   it reads only the CSVs, never the snapshot files, and implements each definition itself
   (including sessionization and the release year of a title). Counts must come out of DuckDB
   as BIGINT and means as DOUBLE.

   Queries 3 and 6 run once per --as-of date; by default for two dates: 60 days before the
   UTC day of the last event (rating or tag), and the day before it.

3. Segments (with --churn-model). Every complete month-end partition of user_features_full
   (`dt` the last day of its month, with `_SUCCESS`) is segmented again here with pandas, from
   the table's own `recency_days`, `events_90d` and `active_days_90d`, by the definitions in
   docs/churn.md: the users with `recency_days` < 365; breakpoints the 20/40/60/80 % quantiles,
   over those of them with `events_90d` > 0, with `interpolation="lower"`; R = 1 + #{breakpoints > recency}, F and M = 1 + #{breakpoints <
   value}; the named segment from (R, floor((F + M) / 2)). Each row's `r_score`, `f_score`,
   `m_score` and `segment` must equal pandas' (null outside the population), and so must the
   segment counts; the last month end's breakpoints and counts must equal FILE, the JSON line
   `streamflix dump --state S churn-model` printed.

One line per check (`ok 1_user_summary: 300 rows`, or `FAIL ...` with the first differing
rows); the exit status is 1 if any check failed, 0 otherwise. Needs only pandas, numpy, pyarrow
and duckdb.
"""

import argparse
import datetime as dt
import json
import math
import re
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DAY = 86_400
CHURN_AFTER = 30 * DAY
SESSION_GAP = 1_800  # a pause of at least this long starts a new session
BINGE_EVENTS = 5
EPOCH = dt.date(1970, 1, 1)
MAX_DIFF_ROWS = 5


# --------------------------------------------------------------------------------------------
# 1. Schemas
# --------------------------------------------------------------------------------------------

SIMPLE_TYPES = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
}


def doc_type(text):
    """The pyarrow type of a type as written in docs/tables.md (`int32`, `list<string>`, ...)."""
    text = text.strip()
    if text in SIMPLE_TYPES:
        return SIMPLE_TYPES[text]
    m = re.fullmatch(r"list<(.+)>", text)
    if m:
        return pa.list_(doc_type(m.group(1)))
    raise ValueError(f"unknown type {text!r}")


def parse_tables_doc(path):
    """{table: pyarrow.Schema} from the `### \\`table\\`` sections of docs/tables.md.

    A section's columns are its `- \\`name: type\\`` bullets, in order; `?` after the type marks
    a nullable column. A section without bullets that says "same columns as `other`" (like
    user_features_full) takes the columns of `other`.
    """
    sections = {}  # table -> (bullets, text)
    current = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        header = re.match(r"#{1,6}\s", line)
        if header:
            m = re.match(r"###\s+`(\w+)`", line)
            current = m.group(1) if m else None
            if current:
                sections[current] = ([], [])
            continue
        if current is None:
            continue
        bullet = re.match(r"-\s+`([^`]+)`", line)
        if bullet:
            sections[current][0].append(bullet.group(1))
        sections[current][1].append(line)

    schemas = {}
    for table, (bullets, _) in sections.items():
        if bullets:
            fields = []
            for bullet in bullets:
                name, sep, typ = bullet.partition(":")
                if not sep:
                    raise ValueError(f"{path}: table {table}: bullet `{bullet}` is not `name: type`")
                typ = typ.strip()
                nullable = typ.endswith("?")
                fields.append(pa.field(name.strip(), doc_type(typ.rstrip("?")), nullable=nullable))
            schemas[table] = pa.schema(fields)
    for table, (bullets, text) in sections.items():
        if not bullets:
            m = re.search(r"same columns as `(\w+)`", " ".join(text), re.IGNORECASE)
            if not m or m.group(1) not in schemas:
                raise ValueError(f"{path}: table {table} has no columns")
            schemas[table] = schemas[m.group(1)]
    return schemas


def same_type(actual, expected):
    """Type equality; for lists only the element type counts (docs/tables.md says `list<string>`
    and nothing about the element field's name or nullability)."""
    if pa.types.is_list(expected):
        return pa.types.is_list(actual) and same_type(actual.value_type, expected.value_type)
    return actual.equals(expected)


def schema_differences(actual, expected):
    """Readable differences between a file's schema and the documented one (empty if equal)."""
    diffs = []
    names = [f.name for f in actual]
    expected_names = [f.name for f in expected]
    if "dt" in names:
        diffs.append("the hive partition column `dt` is stored in the file")
    missing = [n for n in expected_names if n not in names]
    extra = [n for n in names if n not in expected_names]
    if missing:
        diffs.append(f"missing columns {missing}")
    if extra:
        diffs.append(f"undocumented columns {extra}")
    if not missing and not extra and names != expected_names:
        diffs.append(f"column order {names}, documented {expected_names}")
    for f in expected:
        if f.name not in names:
            continue
        a = actual.field(f.name)
        if not same_type(a.type, f.type):
            diffs.append(f"{f.name}: type {a.type}, documented {f.type}")
        if a.nullable != f.nullable:
            diffs.append(f"{f.name}: {'nullable' if a.nullable else 'non-nullable'}, documented "
                         f"{'nullable' if f.nullable else 'non-nullable'}")
    return diffs


def check_schemas(snapshots, schemas, report):
    """Reads every part file of every table under snapshots and compares its schema."""
    present = sorted(p.name for p in snapshots.iterdir()
                     if p.is_dir() and not p.name.startswith(("_", ".")))
    for table in present:
        if table not in schemas:
            report.fail(f"schema {table}", "a table that docs/tables.md does not document")
    for table in sorted(schemas):
        root = snapshots / table
        files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
        if not files:
            report.fail(f"schema {table}", f"no part files under {root}")
            continue
        problems = []
        rows = 0
        for path in files:
            rel = path.relative_to(snapshots).as_posix()
            if table == "movies":
                layout_ok = rel == "movies/part-0.parquet"
            else:
                m = re.fullmatch(rf"{table}/dt=(\d{{4}}-\d{{2}}-\d{{2}})/part-\d+\.parquet", rel)
                layout_ok = bool(m)
                if m:
                    try:
                        dt.date.fromisoformat(m.group(1))
                    except ValueError:
                        layout_ok = False
            if not layout_ok:
                problems.append(f"{rel}: not in the documented layout")
            try:
                parquet = pq.ParquetFile(path)
            except Exception as e:  # noqa: BLE001 - any unreadable file is a failure to report
                problems.append(f"{rel}: unreadable: {e}")
                continue
            rows += parquet.metadata.num_rows
            for diff in schema_differences(parquet.schema_arrow, schemas[table]):
                problems.append(f"{rel}: {diff}")
        if problems:
            shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
            report.fail(f"schema {table}", "\n".join(shown))
        else:
            report.ok(f"schema {table}", f"{len(files)} files, {rows} rows")


# --------------------------------------------------------------------------------------------
# 2. The pandas side: the expected answers, from the CSVs only
# --------------------------------------------------------------------------------------------

# Unicode White_Space, as Rust's str::trim understands it (Python's str.strip also strips
# U+001C..U+001F, which Rust keeps).
RUST_WHITESPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                   "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def title_year(title):
    """The release year of a MovieLens title: a trailing `(YYYY)`, or `(YYYY-YYYY)` for series;
    None without one. Mirrors `title_year` in replay/src/movielens.rs."""
    t = title.strip(RUST_WHITESPACE)  # the reader trims the title, title_year trims its end
    if not t.endswith(")"):
        return None
    inner = t[:-1]
    start = inner.rfind("(")
    if start < 0:
        return None
    year = re.split("[-\u2013]", inner[start + 1:])[0].strip(RUST_WHITESPACE)
    if len(year) == 4 and all(c in "0123456789" for c in year):
        return int(year)
    return None


def movie_genres(field):
    """The genres of a movies.csv `genres` field: `|`-separated; none for `(no genres listed)`."""
    field = field.strip(RUST_WHITESPACE)
    if field in ("(no genres listed)", ""):
        return []
    genres = (g.strip(RUST_WHITESPACE) for g in field.split("|"))
    return [g for g in genres if g]


class MovieLens:
    """The CSVs, and what the definitions derive from them."""

    def __init__(self, data):
        data = Path(data)
        self.ratings = pd.read_csv(
            data / "ratings.csv",
            dtype={"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"},
        ).rename(columns={"userId": "user_id", "movieId": "movie_id", "timestamp": "ts"})
        tags = pd.read_csv(data / "tags.csv", dtype=str, keep_default_na=False)
        self.tags = pd.DataFrame({
            "user_id": tags["userId"].str.strip().astype("int64"),
            "movie_id": tags["movieId"].str.strip().astype("int64"),
            "ts": tags["timestamp"].str.strip().astype("int64"),
        })
        movies = pd.read_csv(data / "movies.csv", dtype=str, keep_default_na=False)
        self.movies = pd.DataFrame({
            "movie_id": movies["movieId"].str.strip().astype("int64"),
            "year": pd.array([title_year(t) for t in movies["title"]], dtype="Int64"),
            "genres": [movie_genres(g) for g in movies["genres"]],
        })
        # (movie_id, genre), each distinct genre of a movie once
        self.movie_genres = (self.movies[["movie_id", "genres"]].explode("genres")
                             .dropna().rename(columns={"genres": "genre"}).drop_duplicates())
        # every event (rating or tag): user_id, ts
        self.events = pd.concat([self.ratings[["user_id", "ts"]], self.tags[["user_id", "ts"]]],
                                ignore_index=True)
        self.rated_genres = self.ratings.merge(self.movie_genres, on="movie_id", how="inner")

    def last_event_day(self):
        return EPOCH + dt.timedelta(days=int(self.events["ts"].max()) // DAY)


def utc(ts):
    """Seconds since the epoch -> naive UTC datetimes."""
    return pd.to_datetime(ts, unit="s")


def cutoff(as_of):
    """00:00 UTC of a date, in seconds since the epoch."""
    return (as_of - EPOCH).days * DAY


def q1_user_summary(ml, _as_of):
    r = ml.ratings
    per_user = r.groupby("user_id").agg(
        movies_watched=("movie_id", "nunique"), ratings=("movie_id", "size"),
        avg_rating=("rating", "mean"), last_watch=("ts", "max"))
    counts = ml.rated_genres.groupby(["user_id", "genre"]).size().rename("n").reset_index()
    favourite = (counts.sort_values(["user_id", "n", "genre"], ascending=[True, False, True])
                 .drop_duplicates("user_id").set_index("user_id")["genre"].rename("favourite_genre"))
    out = per_user.join(favourite, how="left").reset_index()
    return out.sort_values("user_id")


def q2_genre_popularity(ml, _as_of):
    out = ml.rated_genres.groupby("genre").agg(
        ratings=("rating", "size"), mean_rating=("rating", "mean"), users=("user_id", "nunique")
    ).reset_index()
    return out.sort_values(["ratings", "genre"], ascending=[False, True])


def q3_churn_label(ml, as_of):
    x = cutoff(as_of)
    before = ml.events[ml.events["ts"] < x]
    out = before.groupby("user_id")["ts"].max().rename("last_activity").reset_index()
    out["churned"] = out["last_activity"] <= x - CHURN_AFTER
    return out.sort_values("user_id")


def q4_active_users(ml, _as_of):
    e = ml.events.assign(day=utc(ml.events["ts"]).dt.normalize())
    e = e[["user_id", "day"]].drop_duplicates()
    grains = {
        "day": e["day"],
        "week": e["day"] - pd.to_timedelta(e["day"].dt.day_of_week, unit="D"),
        "month": e["day"].dt.to_period("M").dt.to_timestamp(),
    }
    parts = []
    for grain, start in grains.items():
        active = e.assign(period_start=start).groupby("period_start")["user_id"].nunique()
        parts.append(active.rename("active_users").reset_index().assign(grain=grain))
    out = pd.concat(parts, ignore_index=True)[["grain", "period_start", "active_users"]]
    out["period_start"] = out["period_start"].dt.date
    return out.sort_values(["grain", "period_start"])


def month_index(ts):
    t = utc(ts)
    return t.dt.year * 12 + (t.dt.month - 1)


def q5_retention(ml, _as_of):
    e = pd.DataFrame({"user_id": ml.events["user_id"], "month": month_index(ml.events["ts"])})
    signup = e.groupby("user_id")["month"].min().rename("cohort_month")
    sizes = signup.value_counts()
    e = e.join(signup, on="user_id")
    active = (e.assign(k=e["month"] - e["cohort_month"]).groupby(["cohort_month", "k"])["user_id"]
              .nunique())
    last_month = int(e["month"].max())
    rows = []
    for cohort in sorted(sizes.index):
        size = int(sizes[cohort])
        for k in range(last_month - cohort + 1):
            users = int(active.get((cohort, k), 0))
            rows.append((f"{cohort // 12:04d}-{cohort % 12 + 1:02d}", k, size, users, users / size))
    out = pd.DataFrame(rows, columns=["cohort", "months_since_signup", "cohort_size", "active_users",
                                      "share"])
    return out.sort_values(["cohort", "months_since_signup"])


def sessionize(events):
    """Sessions of every user: a pause of SESSION_GAP or more starts a new one. Columns user_id,
    start, end (the last event's time), events, first (the user's first session), binge."""
    e = events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    new = (e["user_id"] != e["user_id"].shift()) | (e["ts"] - e["ts"].shift() >= SESSION_GAP)
    e["session"] = new.cumsum()
    s = e.groupby("session").agg(user_id=("user_id", "first"), start=("ts", "min"),
                                 end=("ts", "max"), events=("ts", "size")).reset_index(drop=True)
    s["first"] = s.groupby("user_id").cumcount() == 0
    s["binge"] = (s["events"] >= BINGE_EVENTS) & ~s["first"]
    return s


def q6_binge_watchers(ml, as_of):
    x = cutoff(as_of)
    s = sessionize(ml.events)
    s = s[s["binge"] & (s["end"] >= x - CHURN_AFTER) & (s["end"] < x)]
    out = s.groupby("user_id").agg(binge_sessions=("end", "size"), last_binge_end=("end", "max"))
    return out.reset_index().sort_values("user_id")


def q7_genre_demand_by_year(ml, _as_of):
    rg = ml.rated_genres.merge(ml.movies[["movie_id", "year"]], on="movie_id")
    by_release = rg[rg["year"].notna()].assign(by="release", year=lambda d: d["year"].astype("int64"))
    by_rating = rg.assign(by="rating", year=utc(rg["ts"]).dt.year.astype("int64"))
    both = pd.concat([by_release, by_rating], ignore_index=True)
    out = both.groupby(["by", "year", "genre"]).agg(
        ratings=("rating", "size"), mean_rating=("rating", "mean"), users=("user_id", "nunique")
    ).reset_index()
    return out.sort_values(["by", "year", "genre"])


def q8_activity_by_hour_weekday(ml, _as_of):
    t = utc(ml.ratings["ts"])
    out = (pd.DataFrame({"hour": t.dt.hour, "weekday": t.dt.day_of_week + 1})
           .groupby(["hour", "weekday"]).size().rename("ratings").reset_index())
    return out.sort_values(["weekday", "hour"])


# Each query: its file's name, the pandas answer, whether it takes as_of, the columns that
# identify a row (for the diff), and the result's columns in order with their kinds.
#   kinds: int (any integer type), bigint (BIGINT: counts and times), double (DOUBLE: means),
#   str, date, bool
QUERIES = [
    ("1_user_summary", q1_user_summary, False, ["user_id"],
     {"user_id": "int", "movies_watched": "bigint", "ratings": "bigint", "avg_rating": "double",
      "last_watch": "bigint", "favourite_genre": "str"}),
    ("2_genre_popularity", q2_genre_popularity, False, ["genre"],
     {"genre": "str", "ratings": "bigint", "mean_rating": "double", "users": "bigint"}),
    ("3_churn_label", q3_churn_label, True, ["user_id"],
     {"user_id": "int", "last_activity": "bigint", "churned": "bool"}),
    ("4_active_users", q4_active_users, False, ["grain", "period_start"],
     {"grain": "str", "period_start": "date", "active_users": "bigint"}),
    ("5_retention", q5_retention, False, ["cohort", "months_since_signup"],
     {"cohort": "str", "months_since_signup": "int", "cohort_size": "bigint",
      "active_users": "bigint", "share": "double"}),
    ("6_binge_watchers", q6_binge_watchers, True, ["user_id"],
     {"user_id": "int", "binge_sessions": "bigint", "last_binge_end": "bigint"}),
    ("7_genre_demand_by_year", q7_genre_demand_by_year, False, ["by", "year", "genre"],
     {"by": "str", "year": "int", "genre": "str", "ratings": "bigint", "mean_rating": "double",
      "users": "bigint"}),
    ("8_activity_by_hour_weekday", q8_activity_by_hour_weekday, False, ["weekday", "hour"],
     {"hour": "int", "weekday": "int", "ratings": "bigint"}),
]

DUCKDB_TYPES = {
    "int": {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"},
    "bigint": {"BIGINT"},
    "double": {"DOUBLE"},
    "str": {"VARCHAR"},
    "date": {"DATE"},
    "bool": {"BOOLEAN"},
}


# --------------------------------------------------------------------------------------------
# 3. Running the queries and comparing
# --------------------------------------------------------------------------------------------

class QueryFileError(Exception):
    pass


def run_query(sql_file, snapshots, as_of):
    """The result of one SQL file: (column names, DuckDB type names, list of row tuples)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET VARIABLE snapshots = ?", [str(snapshots)])
        if as_of is not None:
            con.execute(f"SET VARIABLE as_of = DATE '{as_of.isoformat()}'")
        text = sql_file.read_text(encoding="utf-8")
        statements = con.extract_statements(text)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            kinds = ", ".join(s.type.name for s in statements) or "none"
            raise QueryFileError(f"{sql_file} must hold exactly one SELECT statement, not: {kinds}")
        rel = con.sql(text)
        columns, types = list(rel.columns), [str(t) for t in rel.types]
        return columns, types, [tuple(row) for row in rel.df().itertuples(index=False)]
    finally:
        con.close()


def normalize(value, kind):
    """A cell as a plain Python value (None for null) so that both sides compare alike."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value) and kind != "double":
        return None
    if kind in ("int", "bigint"):
        return int(value)
    if kind == "double":
        return float(value)
    if kind == "bool":
        return bool(value)
    if kind == "date":
        return pd.Timestamp(value).date()
    return str(value)


def same_cell(a, b, kind):
    if a is None or b is None:
        return a is None and b is None
    if kind == "double":
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def compare(got_columns, got_types, got_rows, expected, kinds, keys):
    """Differences between the query's result and the pandas answer, as readable lines (empty
    if they agree: same columns and types, same rows in the same order)."""
    names = list(kinds)
    if got_columns != names:
        return [f"columns {got_columns}, expected {names}"]
    problems = []
    for name, typ in zip(got_columns, got_types):
        allowed = DUCKDB_TYPES[kinds[name]]
        if typ not in allowed:
            problems.append(f"column {name} is {typ}, expected {' or '.join(sorted(allowed))}")
    got = [tuple(normalize(v, kinds[n]) for v, n in zip(row, names)) for row in got_rows]
    want = [tuple(normalize(v, kinds[n]) for v, n in zip(row, names))
            for row in expected[names].itertuples(index=False)]

    def same_row(g, w):
        return all(same_cell(a, b, kinds[n]) for a, b, n in zip(g, w, names))

    if len(got) == len(want) and all(same_row(g, w) for g, w in zip(got, want)):
        return problems

    # Explain the difference by the rows' keys: missing, extra, changed, or only reordered.
    def fmt(value):
        return value.isoformat() if isinstance(value, dt.date) else repr(value)

    def show(row, columns=names):
        return "{" + ", ".join(f"{n}: {fmt(v)}" for n, v in zip(columns, row)) + "}"

    key_idx = [names.index(k) for k in keys]
    got_by_key = {tuple(r[i] for i in key_idx): r for r in got}
    want_by_key = {tuple(r[i] for i in key_idx): r for r in want}
    if len(got_by_key) != len(got):
        problems.append(f"the SQL result repeats keys {keys}")
    if len(got) != len(want):
        problems.append(f"{len(got)} rows, expected {len(want)}")
    only_sql = [r for k, r in got_by_key.items() if k not in want_by_key]
    only_pandas = [r for k, r in want_by_key.items() if k not in got_by_key]
    changed = [(got_by_key[k], w) for k, w in want_by_key.items()
               if k in got_by_key and not same_row(got_by_key[k], w)]
    for label, rows in (("only in the SQL result", only_sql), ("only in pandas (missing)", only_pandas)):
        if rows:
            problems.append(f"{len(rows)} rows {label}, e.g.:")
            problems += [f"    {show(r)}" for r in rows[:MAX_DIFF_ROWS]]
    if changed:
        problems.append(f"{len(changed)} rows with different values, e.g.:")
        for g, w in changed[:MAX_DIFF_ROWS]:
            cells = "; ".join(f"{n}: SQL {fmt(a)}, pandas {fmt(b)}" for a, b, n in zip(g, w, names)
                              if not same_cell(a, b, kinds[n]))
            problems.append(f"    {show([g[i] for i in key_idx], keys)}: {cells}")
    if not only_sql and not only_pandas and not changed:
        first = next(i for i, (g, w) in enumerate(zip(got, want)) if not same_row(g, w))
        problems.append(f"same rows, different order; first difference at row {first}: "
                        f"SQL {show(got[first])}, pandas {show(want[first])}")
    return problems


def check_queries(snapshots, sql_dir, ml, as_of_dates, report):
    for name, reference, takes_as_of, keys, kinds in QUERIES:
        sql_file = sql_dir / f"{name}.sql"
        for as_of in (as_of_dates if takes_as_of else [None]):
            label = name + (f" (as of {as_of.isoformat()})" if as_of else "")
            if not sql_file.is_file():
                report.fail(label, f"{sql_file} not found")
                break
            try:
                columns, types, rows = run_query(sql_file, snapshots, as_of)
            except QueryFileError as e:
                report.fail(label, str(e))
                continue
            except duckdb.Error as e:
                report.fail(label, f"DuckDB: {e}")
                continue
            expected = reference(ml, as_of).reset_index(drop=True)
            problems = compare(columns, types, rows, expected, kinds, keys)
            if problems:
                report.fail(label, "\n".join(problems))
            else:
                report.ok(label, f"{len(rows)} rows")


# --------------------------------------------------------------------------------------------
# 3. Segments
# --------------------------------------------------------------------------------------------

SEGMENT_WITHIN_DAYS = 365
QUANTILES = [0.2, 0.4, 0.6, 0.8]
SEGMENT_NAMES = ["Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
                 "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost"]


def named_segment(r, fm):
    """The segment of R and FM = floor((F + M) / 2): the table in docs/churn.md, row by row."""
    table = [
        ("Champions", {5}, {4, 5}),
        ("Loyal", {3, 4}, {4, 5}),
        ("Potential Loyalist", {4, 5}, {2, 3}),
        ("New", {5}, {1}),
        ("Promising", {4}, {1}),
        ("Need Attention", {3}, {3}),
        ("About to Sleep", {3}, {1, 2}),
        ("At Risk", {1, 2}, {3, 4}),
        ("Can't Lose Them", {1, 2}, {5}),
        ("Hibernating", {2}, {1, 2}),
        ("Lost", {1}, {1, 2}),
    ]
    found = [name for name, rs, fms in table if r in rs and fm in fms]
    assert len(found) == 1, (r, fm, found)
    return found[0]


def pandas_segments(frame):
    """Breakpoints (over the users with events in 90 days), and per row scores and segment, of
    the users with recency_days < 365."""
    pop = frame[frame["recency_days"] < SEGMENT_WITHIN_DAYS]
    recent = pop[pop["events_90d"] > 0]
    breaks = {c: recent[c].quantile(QUANTILES, interpolation="lower").to_numpy()
              for c in ["recency_days", "events_90d", "active_days_90d"]}
    r = 1 + (pop["recency_days"].to_numpy()[:, None] < breaks["recency_days"][None, :]).sum(axis=1)
    f = 1 + (pop["events_90d"].to_numpy()[:, None] > breaks["events_90d"][None, :]).sum(axis=1)
    m = 1 + (pop["active_days_90d"].to_numpy()[:, None] > breaks["active_days_90d"][None, :]).sum(axis=1)
    out = pd.DataFrame({"user_id": pop["user_id"].to_numpy(), "r": r, "f": f, "m": m})
    out["segment"] = [named_segment(int(a), int((b + c) // 2)) for a, b, c in zip(r, f, m)]
    return breaks, out, len(recent)


def check_segments(snapshots, churn_model, report):
    root = snapshots / "user_features_full"
    month_ends = []
    for part in sorted(root.glob("dt=*")):
        day = dt.date.fromisoformat(part.name[3:])
        if (day + dt.timedelta(days=1)).day == 1 and (part / "_SUCCESS").is_file():
            month_ends.append((day, part))
    if not month_ends:
        report.fail("segments", f"no complete month-end partition under {root}")
        return
    segmented = 0
    last = None
    for day, part in month_ends:
        frame = pd.concat([pq.read_table(f).to_pandas() for f in sorted(part.glob("part-*.parquet"))])
        frame = frame.sort_values("user_id").reset_index(drop=True)
        breaks, want, recent = pandas_segments(frame)
        got = frame[frame["segment"].notna()]
        label = f"segments {day}"
        outside = frame[(frame["recency_days"] >= SEGMENT_WITHIN_DAYS)
                        & (frame["segment"].notna() | frame["r_score"].notna())]
        if len(outside):
            report.fail(label, f"{len(outside)} users inactive for a year have a segment, e.g.\n"
                        f"{outside.head(MAX_DIFF_ROWS).to_string()}")
            continue
        if recent == 0:
            if len(got):
                report.fail(label, f"{len(got)} rows segmented, pandas segments nobody")
            continue
        merged = want.merge(got[["user_id", "r_score", "f_score", "m_score", "segment"]],
                            on="user_id", how="left", suffixes=("", "_got"))
        diff = merged[(merged["r"] != merged["r_score"]) | (merged["f"] != merged["f_score"])
                      | (merged["m"] != merged["m_score"]) | (merged["segment"] != merged["segment_got"])]
        if len(diff) or len(got) != len(want):
            report.fail(label, f"{len(diff)} of {len(want)} users differ ({len(got)} segmented in the table):\n"
                        f"{diff.head(MAX_DIFF_ROWS).to_string()}")
            continue
        segmented += len(want)
        last = (day, breaks, want["segment"].value_counts().to_dict(), len(want), recent)
    if segmented:
        report.ok("segments", f"{len(month_ends)} month ends, {segmented} user rows: scores and segments "
                  "equal pandas'")
    if churn_model is None or last is None:
        return
    day, breaks, counts, users, recent = last
    seg = churn_model.get("segments") or {}
    label = f"segments vs churn-model ({day})"
    if seg.get("as_of") != day.isoformat():
        report.fail(label, f"dump's last segmentation is of {seg.get('as_of')}, the table's last of {day}")
        return
    problems = []
    for col in ["recency_days", "events_90d", "active_days_90d"]:
        if [float(x) for x in seg["breakpoints"][col]] != [float(x) for x in breaks[col]]:
            problems.append(f"{col}: dump {seg['breakpoints'][col]}, pandas {breaks[col].tolist()}")
    dumped = {s["segment"]: s["users"] for s in seg["segments"] if s["users"]}
    if dumped != counts:
        problems.append(f"counts: dump {dumped}, pandas {counts}")
    if seg.get("users") != users:
        problems.append(f"users: dump {seg.get('users')}, pandas {users}")
    if seg.get("breakpoint_users") != recent:
        problems.append(f"breakpoint_users: dump {seg.get('breakpoint_users')}, pandas {recent}")
    if problems:
        report.fail(label, "\n".join(problems))
    else:
        report.ok(label, f"breakpoints {', '.join(f'{c} {breaks[c].tolist()}' for c in breaks)}; {users} users, "
                  f"{len(counts)} segments")


class Report:
    def __init__(self):
        self.failures = 0

    def ok(self, what, detail):
        print(f"ok {what}: {detail}", flush=True)

    def fail(self, what, detail):
        self.failures += 1
        lines = detail.splitlines() or [""]
        print(f"FAIL {what}: {lines[0]}", flush=True)
        for line in lines[1:]:
            print(f"    {line}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", required=True, type=Path, help="the snapshot directory DIR")
    parser.add_argument("--data", required=True, type=Path,
                        help="the directory of movies.csv, ratings.csv, tags.csv")
    parser.add_argument("--sql", required=True, type=Path, help="the directory of the .sql files")
    parser.add_argument("--tables-doc", required=True, type=Path, help="docs/tables.md")
    parser.add_argument("--as-of", action="append", type=dt.date.fromisoformat, default=[],
                        metavar="YYYY-MM-DD", help="as_of for queries 3 and 6 (repeatable)")
    parser.add_argument("--churn-model", type=Path, metavar="FILE",
                        help="`streamflix dump churn-model` output: check segments against it")
    args = parser.parse_args()

    if not args.snapshots.is_dir():
        parser.error(f"{args.snapshots} is not a directory")
    report = Report()
    check_schemas(args.snapshots, parse_tables_doc(args.tables_doc), report)

    ml = MovieLens(args.data)
    as_of_dates = args.as_of
    if not as_of_dates:
        last = ml.last_event_day()
        as_of_dates = [last - dt.timedelta(days=60), last - dt.timedelta(days=1)]
    check_queries(args.snapshots.resolve(), args.sql, ml, as_of_dates, report)
    if args.churn_model is not None:
        check_segments(args.snapshots, json.loads(args.churn_model.read_text()), report)

    if report.failures:
        print(f"{report.failures} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
