-- 8_activity_by_hour_weekday.sql — when do users rate? Ratings per UTC hour of day and weekday.
--
--   hour     INTEGER  0 … 23 (UTC)
--   weekday  INTEGER  ISO: 1 = Monday … 7 = Sunday (UTC)
--   ratings  BIGINT   ratings made in that hour of that weekday, over all weeks
-- Only the combinations with at least one rating. Ordered by weekday, hour.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" < sql/8_activity_by_hour_weekday.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.sql(open('sql/8_activity_by_hour_weekday.sql').read()).df()
WITH rated_at AS (
    -- make_timestamp gives a TIMESTAMP without time zone, in UTC
    SELECT make_timestamp(ts * 1000000) AS t
    FROM read_parquet(getvariable('snapshots') || '/ratings/**/*.parquet', hive_partitioning = true)
)
SELECT
    CAST(hour(t) AS INTEGER) AS hour,
    CAST(isodow(t) AS INTEGER) AS weekday,
    count(*) AS ratings
FROM rated_at
GROUP BY ALL
ORDER BY weekday, hour;
