-- name: metrics_outbox_pending
-- returns: rows (consumer text, pending bigint, due bigint, oldest_pending_s float8,
--   oldest_due_s float8)
-- purpose: the backlog of each consumer and channel, for the dispatcher's /metrics. Reads
--   pending rows only, through the partial index outbox_due_idx: the delivered rows,
--   most of the table, are never visited (unlike the outbox_consumer_stats view).
--   A row is owed from its creation (or its requeue), except a row not yet tried, which
--   is owed from its due time: rows held for quiet hours or an escalation's delay are
--   not late while they wait. oldest_due_s: how long the oldest due row has waited
--   past its due time.
SELECT consumer,
       count(*) AS pending,
       count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
       coalesce(extract(epoch FROM now() - min(owed_since)
                                  FILTER (WHERE owed_since <= now())), 0)::float8
           AS oldest_pending_s,
       coalesce(extract(epoch FROM now() - min(next_attempt_at)
                                  FILTER (WHERE next_attempt_at <= now())), 0)::float8
           AS oldest_due_s
FROM (
    SELECT consumer, next_attempt_at,
           CASE WHEN attempts = attempt_base THEN next_attempt_at
                ELSE coalesce(requeued_at, created_at) END AS owed_since
    FROM outbox
    WHERE status = 'pending'
) AS p
GROUP BY consumer;

-- name: metrics_dead_letters
-- returns: rows (consumer text, status text, letters bigint)
-- purpose: dead letters (failed and dead rows) per consumer, for the dispatcher's
--   /metrics, through the partial index outbox_dead_idx.
SELECT consumer, status, count(*) AS letters
FROM outbox
WHERE status IN ('failed', 'dead')
GROUP BY consumer, status;

-- name: metrics_job_queues
-- returns: rows (queue text, status text, jobs bigint)
-- purpose: Procrastinate jobs waiting (todo) and running (doing) per queue, for the
--   dispatcher's /metrics. Finished jobs are deleted or skipped by the status filter.
SELECT queue_name AS queue, status::text AS status, count(*) AS jobs
FROM procrastinate_jobs
WHERE status IN ('todo', 'doing')
GROUP BY queue_name, status;

-- name: metrics_notifications
-- returns: rows (type text, notifications bigint)
-- purpose: notifications made so far per event type, for the dispatcher's /metrics: the
--   events' own counts (events.notified, kept by the fan-out and the digest flush), so
--   one row per event is read, never the notifications.
SELECT type, sum(notified)::bigint AS notifications
FROM events
GROUP BY type;
