-- 6_binge_watchers.sql — who binge-watched in the 30 days before a day?
--
-- A binge session has at least 5 events (ratings and tags) and is not the user's first session
-- (the `binge` flag of `sessions`). Counts the binge sessions that ended (time of their last
-- event) in [X − 30 days, X), X = 00:00 UTC of the given day.
--   user_id         INTEGER
--   binge_sessions  BIGINT   binge sessions that ended in the window
--   last_binge_end  BIGINT   end of the latest of them, seconds since the epoch
-- Only users with at least one such session. Ordered by user_id.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--   as_of      DATE     the day X (the window ends at its 00:00 UTC, excluded)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" \
--          -cmd "SET VARIABLE as_of = DATE '2019-10-01'" < sql/6_binge_watchers.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.execute("SET VARIABLE as_of = DATE '2019-10-01'")
--   con.sql(open('sql/6_binge_watchers.sql').read()).df()
WITH params AS (
    -- 00:00 UTC of X in seconds (date arithmetic: independent of the session's time zone)
    SELECT (CAST(getvariable('as_of') AS DATE) - DATE '1970-01-01') * 86400 AS cutoff
)
SELECT
    s.user_id,
    count(*) AS binge_sessions,
    max(s."end") AS last_binge_end
FROM read_parquet(getvariable('snapshots') || '/sessions/**/*.parquet', hive_partitioning = true) AS s,
    params
WHERE s.binge
  AND s."end" >= params.cutoff - 30 * 86400
  AND s."end" < params.cutoff
GROUP BY s.user_id
ORDER BY s.user_id;
