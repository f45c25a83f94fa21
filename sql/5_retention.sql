-- 5_retention.sql — the latest cohort retention triangle.
--
-- Answers: of the users who signed up (first rating or tag) in a month, how many were active
-- (≥ 1 rating or tag) k months later? Takes the rows of `cohort_retention` with the greatest
-- as_of (the latest month-end close, or the end of the input).
--   cohort               VARCHAR  signup month, 'YYYY-MM'
--   months_since_signup  INTEGER  k = 0 … (as_of's month − cohort)
--   cohort_size          BIGINT   users of the cohort
--   active_users         BIGINT   users of the cohort active in month cohort + k
--   share                DOUBLE   active_users / cohort_size
-- Ordered by cohort, months_since_signup.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" < sql/5_retention.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.sql(open('sql/5_retention.sql').read()).df()
WITH retention AS (
    SELECT as_of, cohort, months_since_signup, cohort_size, active_users, share
    FROM read_parquet(getvariable('snapshots') || '/cohort_retention/**/*.parquet', hive_partitioning = true)
)
SELECT cohort, months_since_signup, cohort_size, active_users, share
FROM retention
WHERE as_of = (SELECT max(as_of) FROM retention)
ORDER BY cohort, months_since_signup;
