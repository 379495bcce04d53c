-- name: admin_users_search
-- returns: rows (id, email text, updated_at timestamptz), by id, at most `limit`
-- purpose: the admin's user search: users whose id starts with `prefix`, or whose email
--   does whatever its case, through users_id_prefix_idx and users_email_lower_idx
--   (text_pattern_ops). LIKE's own characters in the prefix (% _ \) are matched as such.
--   The pattern is written out in each WHERE, not taken from a CTE: the planner turns a
--   LIKE into an index range only for a pattern it knows when planning.
SELECT u.id, u.email, u.updated_at
FROM users AS u
WHERE u.id IN (
    (SELECT p.id FROM users AS p
     WHERE p.id LIKE replace(replace(replace(%(prefix)s::text, '\', '\\'), '%%', '\%%'), '_', '\_')
                     || '%%'
     ORDER BY p.id LIMIT %(limit)s)
    UNION
    (SELECT e.id FROM users AS e
     WHERE lower(e.email) LIKE lower(replace(replace(replace(%(prefix)s::text, '\', '\\'),
                                                     '%%', '\%%'), '_', '\_')) || '%%'
     ORDER BY lower(e.email) LIMIT %(limit)s)
)
ORDER BY u.id
LIMIT %(limit)s;

-- name: admin_users_recent
-- returns: rows (id, email text, updated_at timestamptz), the latest changed first
-- purpose: the admin's users page before a search: the users producers changed last,
--   through users_updated_at_idx.
SELECT u.id, u.email, u.updated_at
FROM users AS u
ORDER BY u.updated_at DESC
LIMIT %(limit)s;

-- name: admin_lookup
-- returns: rows (kind text: user | event | notification | delivery | webhook, id text,
--   label text), at most a few per kind
-- purpose: the admin header's lookup box: what a pasted text names exactly. A user by id
--   (primary key) or by email whatever its case (users_email_lower_idx); with `uuid`, an
--   event by id (primary key) or the deliveries carrying it as their webhook id (outbox's
--   unique (event_id, bucket, created_at)); with `num`, a notification (primary key
--   (id, bucket)) and a delivery (outbox id) of that id.
(SELECT 'user' AS kind, u.id, coalesce(u.email, '') AS label
 FROM users AS u WHERE u.id = %(text)s::text)
UNION ALL
(SELECT 'user', u.id, coalesce(u.email, '')
 FROM users AS u WHERE lower(u.email) = lower(%(text)s::text) AND u.id <> %(text)s::text
 ORDER BY u.id LIMIT 5)
UNION ALL
(SELECT 'event', e.id::text, e.type || ' from ' || e.producer
 FROM events AS e WHERE e.id = %(uuid)s::uuid)
UNION ALL
(SELECT 'webhook', o.id::text, o.consumer || ': ' || o.status
 FROM outbox AS o WHERE o.event_id = %(uuid)s::uuid ORDER BY o.id LIMIT 5)
UNION ALL
(SELECT 'notification', n.id::text, n.type || coalesce(' to ' || n.user_id, '')
 FROM notifications AS n WHERE n.id = %(num)s::bigint)
UNION ALL
(SELECT 'delivery', o.id::text, o.consumer || ': ' || o.status
 FROM outbox AS o WHERE o.id = %(num)s::bigint);
