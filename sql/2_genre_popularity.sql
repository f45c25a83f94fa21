-- 2_genre_popularity.sql — how popular is each genre?
--
-- Every rating counts once for each distinct genre of its movie (movies without genres count
-- for none).
--   genre        VARCHAR
--   ratings      BIGINT   ratings of movies of the genre
--   mean_rating  DOUBLE   their mean
--   users        BIGINT   distinct users who rated a movie of the genre
-- Ordered by ratings descending, then genre.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" < sql/2_genre_popularity.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.sql(open('sql/2_genre_popularity.sql').read()).df()
WITH ratings AS (
    SELECT user_id, movie_id, rating
    FROM read_parquet(getvariable('snapshots') || '/ratings/**/*.parquet', hive_partitioning = true)
),
movie_genres AS (
    SELECT movie_id, unnest(list_distinct(genres)) AS genre
    FROM read_parquet(getvariable('snapshots') || '/movies/*.parquet')
)
SELECT
    mg.genre,
    count(*) AS ratings,
    avg(r.rating)::DOUBLE AS mean_rating,
    count(DISTINCT r.user_id) AS users
FROM ratings AS r
JOIN movie_genres AS mg USING (movie_id)
GROUP BY mg.genre
ORDER BY ratings DESC, mg.genre;
