-- name: admin_deliveries_page
-- returns: rows (id bigint, kind text, consumer text, subject text, status text,
--   reason text, attempts integer, last_error text, created_at timestamptz,
--   updated_at timestamptz, next_attempt_at timestamptz, tag text, event_type text,
--   user_id text), newest (highest id) first, at most `limit`, all with id < `before`
--   when it is given: one page of the admin's deliveries list.
-- purpose: browse the outbox (service/admin/deliveries.py). Every filter is optional
--   (NULL = any). Keyset pagination on the primary key, so a page costs its own rows
--   plus those the filters skip, never an OFFSET's walk over earlier pages. The
--   statuses go through the partial indexes outbox_due_idx (pending) and outbox_dead_idx
--   (failed, dead) when the planner prefers them to the id order. A row's updated_at is
--   never before its created_at, so `since` is also given as a bound on updated_at,
--   which outbox_updated_at_idx serves; created_at itself has no index. subject is the
--   ordering key: a seen mark's subject key, a notification's user id. The time bounds
--   and the tag / event type match the selection of service/ops/redeliver.py, so "redeliver
--   all matching" takes what the list shows. `event` (an event's id), `webhook` (the
--   webhook-id a consumer got: outbox.event_id) and `notification` narrow it to one
--   event's, one webhook's or one notification's rows.
SELECT o.id, o.kind, o.consumer, o.ordering_key AS subject, o.status, o.reason,
       o.attempts, o.last_error, o.created_at, o.updated_at, o.next_attempt_at,
       o.payload ->> 'tag' AS tag, n.type AS event_type, n.user_id
FROM outbox AS o
-- The bucket too: a notification's rows share its bucket (and its shard, on Citus).
LEFT JOIN notifications AS n ON n.id = o.notification_id AND n.bucket = o.bucket
WHERE (%(before)s::bigint IS NULL OR o.id < %(before)s::bigint)
  AND (%(consumers)s::text[] IS NULL OR o.consumer = ANY(%(consumers)s::text[]))
  AND (%(statuses)s::text[] IS NULL OR o.status = ANY(%(statuses)s::text[]))
  AND (%(tag)s::text IS NULL OR o.payload ->> 'tag' = %(tag)s::text)
  AND (%(event_type)s::text IS NULL OR n.type = %(event_type)s::text)
  AND (%(subject)s::text IS NULL OR o.ordering_key = %(subject)s::text)
  -- An event's deliveries, through its notifications (notifications' unique (event_id,
  -- user_id, bucket), then outbox_notification_idx); a webhook id is the row's own.
  AND (%(event)s::uuid IS NULL OR o.notification_id = ANY(ARRAY(
           SELECT e.id FROM notifications AS e WHERE e.event_id = %(event)s::uuid)))
  AND (%(webhook)s::uuid IS NULL OR o.event_id = %(webhook)s::uuid)
  AND (%(notification)s::bigint IS NULL OR o.notification_id = %(notification)s::bigint)
  AND (%(since)s::timestamptz IS NULL
       OR (o.created_at >= %(since)s::timestamptz AND o.updated_at >= %(since)s::timestamptz))
  AND (%(until)s::timestamptz IS NULL OR o.created_at < %(until)s::timestamptz)
ORDER BY o.id DESC
LIMIT %(limit)s;

-- name: admin_delivery_row
-- returns: zero or one row: the outbox row's columns, with its notification's type,
--   user_id, category and event_id (NULL for a seen mark's row)
-- purpose: the admin's page of one delivery, by primary key.
SELECT o.id, o.event_id, o.kind, o.consumer, o.ordering_key AS subject, o.payload,
       o.status, o.reason, o.attempts, o.attempt_base, o.next_attempt_at, o.claimed_until,
       o.claimed_by, o.last_error, o.created_at, o.updated_at, o.delivered_at,
       o.requeued_at, o.notification_id, o.payload ->> 'tag' AS tag, n.type AS event_type,
       n.user_id, n.category, n.event_id AS notification_event_id
FROM outbox AS o
-- The bucket too: a notification's rows share its bucket (and its shard, on Citus).
LEFT JOIN notifications AS n ON n.id = o.notification_id AND n.bucket = o.bucket
WHERE o.id = %(id)s;

-- name: admin_delivery_attempts
-- returns: rows (attempt integer, started_at timestamptz, duration_ms double precision,
--   outcome text, status_code integer, error text, provider text), by attempt
-- purpose: every attempt of one outbox row for its admin page, through the primary key
--   (outbox_id, attempt).
SELECT a.attempt, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error,
       a.provider
FROM delivery_attempts AS a
WHERE a.outbox_id = %(id)s
ORDER BY a.attempt;
