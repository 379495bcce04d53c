-- name: redeliver_candidates
-- returns: rows (id bigint, consumer text, tag text, event_type text, status text,
--   attempts integer, last_error text, created_at timestamptz, updated_at timestamptz), by
--   id, at most `limit` (NULL: all): the rows a requeue with this filter would take.
-- purpose: the selection of bin/redeliver and of the admin's deliveries page
--   (service/ops/redeliver.py). Every filter is optional (NULL = any); statuses are the row
--   states to take, of those a requeue can take: 'failed' (the consumer refused it),
--   'dead' (retries or age ran out) and 'delivered'. tag is a seen mark's, event_type a
--   notification's type. No lock: the requeue re-checks each row as it takes it.
SELECT o.id, o.consumer, o.payload ->> 'tag' AS tag, n.type AS event_type, o.status,
       o.attempts, o.last_error, o.created_at, o.updated_at
FROM outbox AS o
-- The bucket too: a notification's rows share its bucket (and its shard, on Citus).
LEFT JOIN notifications AS n ON n.id = o.notification_id AND n.bucket = o.bucket
WHERE o.status = ANY(%(statuses)s::text[])
  AND o.status IN ('failed', 'dead', 'delivered')
  AND (%(consumers)s::text[] IS NULL OR o.consumer = ANY(%(consumers)s::text[]))
  AND (%(tags)s::text[] IS NULL OR o.payload ->> 'tag' = ANY(%(tags)s::text[]))
  AND (%(event_types)s::text[] IS NULL OR n.type = ANY(%(event_types)s::text[]))
  AND (%(ids)s::bigint[] IS NULL OR o.id = ANY(%(ids)s::bigint[]))
  AND (%(since)s::timestamptz IS NULL OR o.created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR o.created_at < %(until)s::timestamptz)
ORDER BY o.id
LIMIT %(limit)s;

-- name: redeliver_requeue
-- returns: rows (consumer text, status text, requeued bigint): per consumer and the state
--   the rows were in, how many went back in the queue.
-- purpose: put the given rows back in the queue with a fresh retry budget (attempt_base,
--   requeued_at), and wake one dispatcher per consumer as the write path does. Only rows
--   still in one of `statuses` (of 'failed', 'dead', 'delivered') are taken: one that was
--   requeued meanwhile is pending and left alone, so running it twice is harmless, and a
--   concurrent run waits for the row lock and then skips it: the update checks the state
--   again on the row as it is then. (No FOR UPDATE first: Citus locks rows only within
--   one shard.)
WITH picked AS (
    SELECT o.id, o.bucket, o.status FROM outbox AS o
    WHERE o.id = ANY(%(ids)s::bigint[]) AND o.status = ANY(%(statuses)s::text[])
      AND o.status IN ('failed', 'dead', 'delivered')
),
requeued AS (
    UPDATE outbox AS o
    SET status = 'pending', attempt_base = o.attempts, requeued_at = now(),
        next_attempt_at = now(), claimed_until = NULL, last_error = NULL,
        delivered_at = NULL, updated_at = now()
    FROM picked AS p
    WHERE o.id = p.id AND o.bucket = p.bucket AND o.status = p.status
    RETURNING o.consumer, p.status
),
woken AS (
    SELECT wake_dispatchers(array_agg(consumer), %(wake_queue)s::text, %(wake_task)s::text)
    FROM requeued
    HAVING count(*) > 0
)
SELECT consumer, status, count(*) AS requeued
-- woken is a plain SELECT, and a CTE runs only if read: the join reads it.
FROM requeued LEFT JOIN woken ON true
GROUP BY consumer, status ORDER BY consumer, status;

-- name: admin_requeued_since
-- returns: one row (pending bigint, delivered bigint, failed bigint): the rows requeued at
--   or after `since` (of `ids`, when given), by what became of them
-- purpose: the admin's "Requeued" notice, which stays only while requeued rows are still
--   pending. A requeue sets updated_at and requeued_at to its time and later writes only
--   move updated_at on, so outbox_updated_at_idx bounds the scan to rows written since
--   (the page asks only for the last hour).
SELECT count(*) FILTER (WHERE o.status = 'pending') AS pending,
       count(*) FILTER (WHERE o.status = 'delivered') AS delivered,
       count(*) FILTER (WHERE o.status IN ('failed', 'dead')) AS failed
FROM outbox AS o
WHERE o.updated_at >= %(since)s AND o.requeued_at >= %(since)s
  AND (%(ids)s::bigint[] IS NULL OR o.id = ANY(%(ids)s::bigint[]));
