-- 1_user_summary.sql — one row per user with at least one rating.
--
-- Answers: how much has each user watched (rated), how do they rate, when did they last watch,
-- and which genre do they watch most?
--   user_id          INTEGER
--   movies_watched   BIGINT   distinct movies rated
--   ratings          BIGINT   number of ratings
--   avg_rating       DOUBLE   mean rating
--   last_watch       BIGINT   time of the latest rating, seconds since the epoch (UTC)
--   favourite_genre  VARCHAR  the genre with the most of the user's ratings (a rating counts once
--                             for each distinct genre of its movie); ties go to the genre name
--                             that sorts first; NULL when none of the user's movies has a genre
-- Ordered by user_id.
--
-- Parameters (DuckDB variables):
--   snapshots  VARCHAR  the snapshot directory DIR (`--snapshots DIR`, see docs/tables.md)
--
-- Run (DuckDB CLI):
--   duckdb -cmd "SET VARIABLE snapshots = '/path/to/DIR'" < sql/1_user_summary.sql
-- or from Python:
--   con = duckdb.connect(); con.execute("SET VARIABLE snapshots = '/path/to/DIR'")
--   con.sql(open('sql/1_user_summary.sql').read()).df()
WITH ratings AS (
    SELECT user_id, movie_id, rating, ts
    FROM read_parquet(getvariable('snapshots') || '/ratings/**/*.parquet', hive_partitioning = true)
),
movie_genres AS (
    SELECT movie_id, unnest(list_distinct(genres)) AS genre
    FROM read_parquet(getvariable('snapshots') || '/movies/*.parquet')
),
per_user AS (
    SELECT
        user_id,
        count(DISTINCT movie_id) AS movies_watched,
        count(*) AS ratings,
        avg(rating)::DOUBLE AS avg_rating,
        max(ts) AS last_watch
    FROM ratings
    GROUP BY user_id
),
genre_ranked AS (
    SELECT
        r.user_id,
        mg.genre,
        row_number() OVER (PARTITION BY r.user_id ORDER BY count(*) DESC, mg.genre) AS rank
    FROM ratings AS r
    JOIN movie_genres AS mg USING (movie_id)
    GROUP BY r.user_id, mg.genre
)
SELECT
    p.user_id,
    p.movies_watched,
    p.ratings,
    p.avg_rating,
    p.last_watch,
    g.genre AS favourite_genre
FROM per_user AS p
LEFT JOIN genre_ranked AS g ON g.user_id = p.user_id AND g.rank = 1
ORDER BY p.user_id;
