-- name: admin_consumer_attempts
-- returns: one row (attempts bigint, delivered bigint, retried bigint, failed bigint, dead
--   bigint, last_error text, last_error_code integer, last_error_at timestamptz): the
--   last hour's attempts by outcome, and the newest attempt with an error of the last day
-- purpose: the admin's consumers page: success rate and last error of one consumer or
--   channel, read through delivery_attempts_consumer_started_idx (consumer, started_at),
--   so the cost is its last hour (and the walk back to its newest error, bounded by a
--   day), not the whole history. One consumer a statement: Citus takes no LATERAL join of
--   a list with a distributed table, and runs each part here on every shard at once.
SELECT h.attempts, h.delivered, h.retried, h.failed, h.dead,
       e.error AS last_error, e.status_code AS last_error_code, e.started_at AS last_error_at
FROM (
    SELECT count(*) AS attempts,
           count(*) FILTER (WHERE a.outcome = 'delivered') AS delivered,
           count(*) FILTER (WHERE a.outcome = 'retry') AS retried,
           count(*) FILTER (WHERE a.outcome = 'failed') AS failed,
           count(*) FILTER (WHERE a.outcome = 'dead') AS dead
    FROM delivery_attempts AS a
    WHERE a.consumer = %(consumer)s AND a.started_at >= now() - interval '1 hour'
) AS h
LEFT JOIN (
    SELECT a.error, a.status_code, a.started_at
    FROM delivery_attempts AS a
    WHERE a.consumer = %(consumer)s AND a.started_at >= now() - interval '1 day'
      AND a.error IS NOT NULL
    ORDER BY a.started_at DESC
    LIMIT 1
) AS e ON true;

-- name: admin_outbox_backlog
-- returns: rows (consumer text, pending bigint, due bigint, in_flight bigint,
--   oldest_pending_at timestamptz, oldest_due_at timestamptz, failed bigint, dead bigint),
--   by consumer: only consumers with pending rows or dead letters. oldest_due_at is the
--   earliest next_attempt_at of the rows due now: how long the queue has been behind.
-- purpose: the admin's dashboard and consumers page: backlog and dead letters in the words of the view
--   outbox_consumer_stats, without its scan of every row: pending rows come through
--   outbox_due_idx and dead letters through outbox_dead_idx (both partial), so the
--   delivered history is never read. Refreshed every few seconds.
WITH pending AS (
    SELECT o.consumer, count(*) AS pending,
           count(*) FILTER (WHERE o.next_attempt_at <= now()) AS due,
           count(*) FILTER (WHERE o.claimed_until > now()) AS in_flight,
           min(o.created_at) AS oldest_pending_at,
           min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at <= now()) AS oldest_due_at
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
       coalesce(p.in_flight, 0) AS in_flight, p.oldest_pending_at, p.oldest_due_at,
       coalesce(l.failed, 0) AS failed, coalesce(l.dead, 0) AS dead
FROM pending AS p
FULL JOIN lost AS l USING (consumer)
ORDER BY consumer;

-- name: admin_consumers_state
-- returns: rows (consumer text, status text, breaker text, consecutive_failures integer,
--   opened_at timestamptz, waiting bigint, last_error text, dispatcher text, updated_at
--   timestamptz), by consumer
-- purpose: what the dispatchers last said of each consumer (breaker, configured or not),
--   for the admin's consumers page. One row per consumer: a small table.
SELECT consumer, status, breaker, consecutive_failures, opened_at, waiting, last_error,
       dispatcher, updated_at
FROM consumer_state
ORDER BY consumer;
