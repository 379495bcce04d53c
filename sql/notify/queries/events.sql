-- name: event_status
-- returns: zero or one row (id uuid, type text, status text, send_at, created_at,
--   materialized_at timestamptz, notified bigint, no_recipient bigint, channels jsonb):
--   none unless the event exists and is this producer's (producer NULL: anyone's, for
--   a key with events:read). channels is {channel: {queued, held, sent, failed, dead,
--   seen, suppressed: {reason: count}}} for the type's channels and any other that has
--   deliveries.
-- purpose: GET /v1/events/{id}: the event's deliveries counted by channel and state in
--   one set-based statement. queued = pending and not held; held = pending until quiet
--   hours end; failed = refused for good (a permanent 4xx); dead = out of attempts or
--   age (failed and dead are the outbox row's status); seen = sent and marked seen by
--   its user. Suppressed reasons come from the notification (muted, preference,
--   no_contact: never queued) and from outbox rows (seen, expired, no_contact, erased:
--   dropped before sending).
WITH ev AS (
    SELECT e.id, e.type, e.status, e.send_at, e.created_at, e.materialized_at, e.notified,
           e.no_recipient
    FROM events AS e
    WHERE e.id = %(event_id)s::uuid
      AND (%(producer)s::text IS NULL OR e.producer = %(producer)s::text)
),
-- The event's rows are read by its id and joined on the bucket, not joined to `ev`: on
-- Citus, events stay on the coordinator and the rest is one co-located join per shard.
notified AS (
    SELECT n.id, n.bucket, n.user_id, n.suppressed
    FROM notifications AS n
    WHERE n.event_id = %(event_id)s::uuid AND EXISTS (SELECT 1 FROM ev)
),
deliveries AS (
    SELECT o.consumer AS channel, o.status, o.reason,
           o.status = 'delivered' AND m.bucket IS NOT NULL AS seen
    FROM notifications AS n
    -- On the bucket too: a user's rows share a shard (user_bucket()).
    JOIN outbox AS o ON o.notification_id = n.id AND o.bucket = n.bucket
    -- One mark at most: (tag, item_id, subject_key, bucket) is unique.
    LEFT JOIN seen_marks AS m
      ON m.tag = %(seen_tag)s AND m.item_id = n.id::text
     AND m.subject_key = 'client:' || n.user_id AND m.expires_at > now()
     AND m.bucket = n.bucket
    WHERE n.event_id = %(event_id)s::uuid AND EXISTS (SELECT 1 FROM ev)
),
by_state AS (
    SELECT channel, jsonb_build_object(
        'queued', count(*) FILTER (WHERE status = 'pending'
                                   AND reason IS DISTINCT FROM 'quiet_hours'),
        'held', count(*) FILTER (WHERE status = 'pending' AND reason = 'quiet_hours'),
        'sent', count(*) FILTER (WHERE status = 'delivered'),
        'failed', count(*) FILTER (WHERE status = 'failed'),
        'dead', count(*) FILTER (WHERE status = 'dead'),
        'seen', count(*) FILTER (WHERE seen)
    ) AS counts
    FROM deliveries
    GROUP BY channel
),
suppressions AS (
    SELECT channel, reason, count(*) AS n
    FROM (
        SELECT channel, coalesce(reason, 'unknown') AS reason
        FROM deliveries WHERE status = 'suppressed'
        UNION ALL
        SELECT x.key, x.value
        FROM notified AS s CROSS JOIN LATERAL jsonb_each_text(s.suppressed) AS x
    ) AS reasons
    GROUP BY channel, reason
),
by_reason AS (
    SELECT channel, jsonb_object_agg(reason, n) AS suppressed
    FROM suppressions
    GROUP BY channel
),
channels AS (
    SELECT channel FROM by_state
    UNION
    SELECT channel FROM by_reason
    UNION
    SELECT unnest(array_remove(t.channels || t.escalation_channel, NULL))
    FROM ev JOIN notify_event_types AS t ON t.name = ev.type
)
SELECT ev.id, ev.type, ev.status, ev.send_at, ev.created_at, ev.materialized_at, ev.notified,
       ev.no_recipient,
       (SELECT coalesce(jsonb_object_agg(
                   c.channel,
                   coalesce(b.counts, '{}')
                   || jsonb_build_object('suppressed', coalesce(r.suppressed, '{}'))), '{}')
        FROM channels AS c
        LEFT JOIN by_state AS b USING (channel)
        LEFT JOIN by_reason AS r USING (channel)) AS channels
FROM ev;

-- name: notification_status
-- returns: zero or one row (id bigint, event_id uuid, type text, category text, user_id
--   text, created_at timestamptz, seen_at timestamptz, channels jsonb): none unless the
--   notification belongs to an event of this producer (producer NULL: any, for a key with
--   events:read). channels is {channel: {state, reason, attempts, escalation,
--   next_attempt_at, provider, error, delivered_at}}.
-- purpose: GET /v1/notifications/{id}: one notification's delivery on every channel, with
--   its latest attempt, and whether (and when) its user saw it.
WITH nt AS (
    SELECT n.id, n.bucket, n.event_id, n.type, n.category, n.user_id, n.created_at,
           n.suppressed
    FROM notifications AS n
    JOIN events AS e ON e.id = n.event_id
    WHERE n.id = %(notification_id)s
      AND (%(producer)s::text IS NULL OR e.producer = %(producer)s::text)
),
per_channel AS (
    SELECT o.consumer AS channel, jsonb_build_object(
        'state', CASE
            WHEN o.status = 'pending' AND o.reason = 'quiet_hours' THEN 'held'
            WHEN o.status = 'pending' THEN 'queued'
            WHEN o.status = 'delivered' THEN 'sent'
            WHEN o.status IN ('failed', 'dead') THEN o.status
            ELSE 'suppressed' END,
        'reason', o.reason,
        'attempts', o.attempts,
        'escalation', coalesce((o.payload ->> 'escalation')::boolean, false),
        'next_attempt_at', CASE WHEN o.status = 'pending' THEN o.next_attempt_at END,
        'provider', last.provider,
        'error', coalesce(last.error, o.last_error),
        'delivered_at', o.delivered_at
    ) AS delivery
    FROM nt
    JOIN outbox AS o ON o.notification_id = nt.id AND o.bucket = nt.bucket
    LEFT JOIN LATERAL (
        SELECT a.provider, a.error FROM delivery_attempts AS a
        WHERE a.outbox_id = o.id AND a.bucket = o.bucket
        ORDER BY a.attempt DESC
        LIMIT 1
    ) AS last ON true
    UNION ALL
    SELECT x.key, jsonb_build_object('state', 'suppressed', 'reason', x.value)
    FROM nt CROSS JOIN LATERAL jsonb_each_text(nt.suppressed) AS x
)
SELECT nt.id, nt.event_id, nt.type, nt.category, nt.user_id, nt.created_at,
       (SELECT m.seen_at FROM seen_marks AS m
        WHERE m.tag = %(seen_tag)s AND m.item_id = nt.id::text
          AND m.subject_key = 'client:' || nt.user_id AND m.expires_at > now()
          AND m.bucket = nt.bucket) AS seen_at,
       (SELECT coalesce(jsonb_object_agg(channel, delivery), '{}') FROM per_channel)
           AS channels
FROM nt;
