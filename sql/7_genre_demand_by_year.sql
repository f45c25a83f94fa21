-- 7_genre_demand_by_year.sql — demand per genre and year, two ways.
--
-- by = 'release': the movies' release year (movies.year; movies without one are left out).
-- by = 'rating':  the UTC year the rating was made.
-- Every rating counts once for each distinct genre of its movie.
--   by           VARCHAR  'release' or 'rating'
--   year         INTEGER
--   genre        VARCHAR
--   ratings      BIGINT   ratings of movies of the genre in that year
--   mean_rating  DOUBLE   their mean
--   users        BIGINT   distinct users among them
-- Ordered by by, year, genre.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" < sql/7_genre_demand_by_year.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.sql(open('sql/7_genre_demand_by_year.sql').read()).df()
WITH ratings AS (
    SELECT user_id, movie_id, rating, ts
    FROM read_parquet(getvariable('snapshots') || '/ratings/**/*.parquet', hive_partitioning = true)
),
movie_genres AS (
    SELECT movie_id, year, unnest(list_distinct(genres)) AS genre
    FROM read_parquet(getvariable('snapshots') || '/movies/*.parquet')
),
rated AS (
    SELECT
        r.user_id,
        r.rating,
        mg.genre,
        mg.year AS release_year,
        -- make_timestamp gives a TIMESTAMP without time zone, in UTC
        year(make_timestamp(r.ts * 1000000)) AS rating_year
    FROM ratings AS r
    JOIN movie_genres AS mg USING (movie_id)
)
SELECT
    'release' AS "by",
    CAST(release_year AS INTEGER) AS year,
    genre,
    count(*) AS ratings,
    avg(rating)::DOUBLE AS mean_rating,
    count(DISTINCT user_id) AS users
FROM rated
WHERE release_year IS NOT NULL
GROUP BY release_year, genre
UNION ALL
SELECT
    'rating',
    CAST(rating_year AS INTEGER),
    genre,
    count(*),
    avg(rating)::DOUBLE,
    count(DISTINCT user_id)
FROM rated
GROUP BY rating_year, genre
ORDER BY "by", year, genre;
