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

-- name: admin_dashboard_outbox
-- returns: rows (consumer text, pending bigint, due bigint, oldest_pending_at timestamptz,
--   failed bigint, dead bigint), by consumer: only consumers with pending or dead rows
-- purpose: the dashboard's backlog and dead letters, in outbox_consumer_stats' words but
--   without its scan of every row: pending rows are read through outbox_due_idx and dead
--   letters through outbox_dead_idx (both partial), so the cost is the backlog and the
--   dead letters, never the delivered history. Refreshed every few seconds.
WITH pending AS (
    SELECT o.consumer, count(*) AS pending,
           count(*) FILTER (WHERE o.next_attempt_at <= now()) AS due,
           min(o.created_at) AS oldest_pending_at
    FROM outbox AS o
    WHERE o.status = 'pending'
    GROUP BY o.consumer
),
lost AS (
    SELECT o.consumer, count(*) FILTER (WHERE o.status = 'failed') AS failed,
           count(*) FILTER (WHERE o.status = 'dead') AS dead
    FROM outbox AS o
    WHERE o.status IN ('failed', 'dead')
    GROUP BY o.consumer
)
SELECT consumer, coalesce(p.pending, 0) AS pending, coalesce(p.due, 0) AS due,
       p.oldest_pending_at, coalesce(l.failed, 0) AS failed, coalesce(l.dead, 0) AS dead
FROM pending AS p
FULL JOIN lost AS l USING (consumer)
ORDER BY consumer;
