-- 4_active_users.sql — daily, weekly and monthly active users.
--
-- A user is active in a period if they have at least one event (rating or tag) in it (UTC).
-- Source: `user_features`, which has a row for every user and day with activity (as of the
-- day's end); a row also appears for other changes (a session closing, a churn), so it counts
-- as activity on its as_of's UTC day only if last_activity is on or after that day's 00:00.
--   grain          VARCHAR  'day', 'week' (Monday to Sunday) or 'month'
--   period_start   DATE     the day; the Monday of the week; the first of the month
--   active_users   BIGINT   distinct users active in the period
-- Only periods with at least one active user. Ordered by grain, period_start.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" < sql/4_active_users.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.sql(open('sql/4_active_users.sql').read()).df()
WITH features AS (
    SELECT
        user_id,
        last_activity,
        -- the UTC day of as_of (make_timestamp gives a TIMESTAMP without time zone, in UTC)
        CAST(make_timestamp(as_of * 1000000) AS DATE) AS day
    FROM read_parquet(getvariable('snapshots') || '/user_features/**/*.parquet', hive_partitioning = true)
),
active_days AS (
    SELECT DISTINCT user_id, day
    FROM features
    WHERE last_activity >= (day - DATE '1970-01-01') * 86400
)
SELECT 'day' AS grain, day AS period_start, count(DISTINCT user_id) AS active_users
FROM active_days
GROUP BY day
UNION ALL
SELECT 'week', CAST(date_trunc('week', day) AS DATE), count(DISTINCT user_id)
FROM active_days
GROUP BY CAST(date_trunc('week', day) AS DATE)
UNION ALL
SELECT 'month', CAST(date_trunc('month', day) AS DATE), count(DISTINCT user_id)
FROM active_days
GROUP BY CAST(date_trunc('month', day) AS DATE)
ORDER BY grain, period_start;
