-- The digests gathering now, one row per recipient, type and key: its items, the first
-- and the newest item's time, and when flush_digests() sends it (due_at, see
-- digest_due_at(); the recipient's time zone is read now, NULL is UTC).
CREATE VIEW open_digests AS
SELECT d.user_id, d.type, d.digest_key, d.items, d.first_at, d.last_at,
       digest_due_at(t.digest_window, t.digest_every_s, t.digest_at, t.digest_quiet_s,
                     t.digest_max_wait_s, t.digest_max_items, coalesce(u.timezone, 'UTC'),
                     d.first_at, d.last_at, d.items) AS due_at
FROM (
    SELECT i.user_id, i.type, i.digest_key, count(*) AS items, min(i.created_at) AS first_at,
           max(i.created_at) AS last_at
    FROM digest_items AS i
    WHERE i.notification_id IS NULL
    GROUP BY i.user_id, i.type, i.digest_key
) AS d
LEFT JOIN notify_event_types AS t ON t.name = d.type AND t.enabled AND t.mode = 'digest'
LEFT JOIN users AS u ON u.id = d.user_id;
