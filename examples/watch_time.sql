-- A day of video views turned into watch time per video.
-- Run it with: ember submit examples/watch_time.sql

CREATE EXTERNAL TABLE views (
  event_time    TIMESTAMP NOT NULL,
  user_id       BIGINT    NOT NULL,
  video_id      BIGINT    NOT NULL,
  watch_seconds BIGINT    NOT NULL,
  country       VARCHAR   NOT NULL
)
STORED AS CSV
LOCATION 'examples/data/views/'
OPTIONS ('format.has_header' 'true');

-- The ten most watched videos of the day.
SELECT video_id,
       SUM(watch_seconds) / 60.0 AS minutes,
       COUNT(*) AS views
FROM views
GROUP BY video_id
ORDER BY minutes DESC
LIMIT 10;

-- The full table, one row per video, written as Parquet.
COPY (
  SELECT video_id,
         SUM(watch_seconds) / 60.0 AS minutes,
         COUNT(*) AS views,
         COUNT(DISTINCT user_id) AS viewers
  FROM views
  GROUP BY video_id
  ORDER BY video_id
) TO 'target/ember-output/watch_time_per_video.parquet' STORED AS PARQUET;
