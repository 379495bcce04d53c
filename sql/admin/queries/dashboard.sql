-- name: admin_dashboard_per_minute
-- returns: 60 rows (minute timestamptz, marks bigint, events bigint), oldest first: the
--   last 60 minutes, the current one included, with zeros for quiet minutes
-- purpose: the dashboard's traffic chart. Both tables are read through their indexed
--   updated_at (a row's updated_at is never before its seen_at / created_at), so the
--   cost is the last hour's rows, not the table's. A mark counts in the minute it was
--   (last) seen; marks already purged (expired) are not counted.
WITH bounds AS (
    SELECT date_trunc('minute', now()) - interval '59 minutes' AS since
),
minutes AS (
    SELECT generate_series(b.since, b.since + interval '59 minutes', interval '1 minute')
           AS minute
    FROM bounds AS b
),
marks AS (
    SELECT date_trunc('minute', m.seen_at) AS minute, count(*) AS n
    FROM seen_marks AS m, bounds AS b
    WHERE m.updated_at >= b.since AND m.seen_at >= b.since
    GROUP BY 1
),
posted AS (
    SELECT date_trunc('minute', e.created_at) AS minute, count(*) AS n
    FROM events AS e, bounds AS b
    WHERE e.updated_at >= b.since AND e.created_at >= b.since
    GROUP BY 1
)
SELECT minutes.minute, coalesce(marks.n, 0) AS marks, coalesce(posted.n, 0) AS events
FROM minutes
LEFT JOIN marks USING (minute)
LEFT JOIN posted USING (minute)
ORDER BY minutes.minute;

-- name: admin_dashboard_deliveries
-- returns: rows (consumer text, outcome text, attempts bigint), by consumer and outcome
-- purpose: the dashboard's deliveries chart: attempts of the last hour per consumer or
--   channel and outcome (delivered / retry / failed / dead), read through
--   delivery_attempts_updated_at_idx (an attempt's row is written when it ends).
SELECT a.consumer, a.outcome, count(*) AS attempts
FROM delivery_attempts AS a
WHERE a.updated_at >= now() - interval '1 hour'
  AND a.started_at >= now() - interval '1 hour'
GROUP BY a.consumer, a.outcome
ORDER BY a.consumer, a.outcome;
