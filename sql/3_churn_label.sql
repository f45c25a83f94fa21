-- 3_churn_label.sql — churn label of every user as of the start of a day.
--
-- Answers: as of 00:00 UTC of day X, which users have churned (no rating or tag for 30 days)?
-- Covers every user with any activity (rating or tag) before X. Uses the `user_features` rows
-- whose `as_of` is before X (the closes of the days before X); a user's last activity is the
-- latest `last_activity` among them.
--   user_id        INTEGER
--   last_activity  BIGINT   time of the user's last event before X, seconds since the epoch
--   churned        BOOLEAN  last_activity <= X - 30 days (the processor's rule: churned once 30
--                           days have passed since the last activity)
-- Ordered by user_id.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--   as_of      DATE     the day X (the label is as of its 00:00 UTC)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" \
--          -cmd "SET VARIABLE as_of = DATE '2019-10-01'" < sql/3_churn_label.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.execute("SET VARIABLE as_of = DATE '2019-10-01'")
--   con.sql(open('sql/3_churn_label.sql').read()).df()
WITH params AS (
    -- 00:00 UTC of X in seconds (date arithmetic: independent of the session's time zone)
    SELECT (CAST(getvariable('as_of') AS DATE) - DATE '1970-01-01') * 86400 AS cutoff
),
last_activity AS (
    SELECT uf.user_id, max(uf.last_activity) AS last_activity
    FROM read_parquet(getvariable('snapshots') || '/user_features/**/*.parquet', hive_partitioning = true) AS uf,
        params
    WHERE uf.as_of < params.cutoff
    GROUP BY uf.user_id
)
SELECT
    la.user_id,
    la.last_activity,
    la.last_activity <= params.cutoff - 30 * 86400 AS churned
FROM last_activity AS la, params
ORDER BY la.user_id;
