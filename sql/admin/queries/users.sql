-- name: admin_user_notifications
-- returns: rows (id bigint, event_id uuid, type, category text, created_at timestamptz,
--   seen_at timestamptz, suppressed jsonb, deliveries jsonb [{channel, status, reason,
--   attempts, error, next_attempt_at, delivered_at}]), newest first
-- purpose: a user's page in the admin: the latest notifications with each channel's
--   delivery, read through notifications_user_idx and outbox_notification_idx; seen_at
--   from the user's seen mark of the notification, as the inbox and the status endpoints
--   read it.
WITH recent AS (
    SELECT n.id, n.bucket, n.event_id, n.type, n.category, n.created_at, n.suppressed
    FROM notifications AS n
    -- One shard on Citus: a user's rows share user_bucket().
    WHERE n.user_id = %(user_id)s AND n.bucket = user_bucket(%(user_id)s)
    ORDER BY n.id DESC
    LIMIT %(limit)s
)
SELECT r.id, r.event_id, r.type, r.category, r.created_at,
       (SELECT m.seen_at FROM seen_marks AS m
        WHERE m.tag = %(seen_tag)s AND m.item_id = r.id::text
          AND m.subject_key = %(subject_key)s AND m.expires_at > now()
          -- The user's bucket by value too, so that Citus routes the whole to one shard.
          AND m.bucket = r.bucket AND m.bucket = user_bucket(%(user_id)s)) AS seen_at,
       r.suppressed,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                            'channel', o.consumer, 'status', o.status, 'reason', o.reason,
                            'attempts', o.attempts, 'error', o.last_error,
                            'next_attempt_at', o.next_attempt_at,
                            'delivered_at', o.delivered_at)
                        ORDER BY o.consumer, o.id)
                 FROM outbox AS o
                 WHERE o.notification_id = r.id AND o.bucket = r.bucket
                   AND o.bucket = user_bucket(%(user_id)s)), '[]') AS deliveries
FROM recent AS r
ORDER BY r.id DESC;

-- name: admin_user_seen_marks
-- returns: rows (tag, item_id text, seen_at, expires_at timestamptz, outbox_id bigint,
--   outbox_status text: the mark's delivery to its consumer, NULL for a tag without one),
--   newest first
-- purpose: a user's page in the admin: the user's recent seen marks (subject_key
--   'client:<user id>'). seen_marks has no index on subject_key, so the read is bounded
--   by time through seen_marks_updated_at_idx (`since`, an interval) and by `limit`.
SELECT m.tag, m.item_id, m.seen_at, m.expires_at, o.id AS outbox_id, o.status AS outbox_status
FROM seen_marks AS m
LEFT JOIN outbox AS o ON o.id = m.outbox_id AND o.bucket = m.bucket
WHERE m.subject_key = %(subject_key)s AND m.bucket = subject_bucket(%(subject_key)s)
  AND m.updated_at >= now() - %(since)s::interval
ORDER BY m.seen_at DESC
LIMIT %(limit)s;
