-- name: inbox_page
-- returns: rows (unseen bigint, id bigint, event_id uuid, type text, category text,
--   created_at timestamptz, data jsonb, locale text, seen boolean), newest first: up to
--   `limit` notifications older than `before` (none: from the newest), of `ids` only
--   when given (the live stream's new items). unseen is on every row; when the page is
--   empty there is one row with only unseen set.
-- purpose: GET /v1/inbox: the user's notifications whose inbox delivery is done, with the
--   event data to render them, whether each is seen (a seen mark of the notify tag by
--   this user), and how many are unseen in all. Pages walk notifications_user_idx.
WITH mine AS NOT MATERIALIZED (
    SELECT n.id, n.event_id, n.type, n.category, n.created_at, n.data,
           EXISTS (
               SELECT 1 FROM seen_marks AS m
               WHERE m.tag = %(seen_tag)s AND m.item_id = n.id::text
                 AND m.subject_key = %(subject_key)s AND m.expires_at > now()
                 AND m.bucket = n.bucket
           ) AS seen
    FROM notifications AS n
    -- user_bucket(): one user's notifications, deliveries and marks are on one shard.
    WHERE n.user_id = %(user_id)s AND n.bucket = user_bucket(%(user_id)s)
      AND EXISTS (
          SELECT 1 FROM outbox AS o
          WHERE o.notification_id = n.id AND o.bucket = n.bucket
            AND o.consumer = ANY (%(channels)s::text[])
            AND o.status = 'delivered'
      )
),
unseen AS (
    SELECT count(*) AS unseen FROM mine WHERE NOT seen
),
page AS (
    -- A digest's own data (see flush_digests()), else the event's.
    SELECT mine.id, mine.event_id, mine.type, mine.category, mine.created_at,
           coalesce(mine.data, e.data) AS data,
           (SELECT u.locale FROM users AS u WHERE u.id = %(user_id)s) AS locale, mine.seen
    FROM mine
    JOIN events AS e ON e.id = mine.event_id
    WHERE mine.id < coalesce(%(before)s::bigint, 9223372036854775807)
      AND (%(ids)s::bigint[] IS NULL OR mine.id = ANY(%(ids)s::bigint[]))
    ORDER BY mine.id DESC
    LIMIT %(limit)s
)
SELECT unseen.unseen, page.id, page.event_id, page.type, page.category, page.created_at,
       page.data, page.locale, page.seen
FROM unseen
LEFT JOIN page ON true
ORDER BY page.id DESC;

-- name: record_inbox_changes
-- returns: one row (notified bigint): the users woken
-- purpose: the live inbox's change log, in the transaction that made the change: one
--   inbox_changes row per (user, item) (`change`: 'item' when the dispatcher delivered it
--   to an inbox channel, 'seen' when the seen path recorded a client's mark of the
--   notification tag), and a NOTIFY per user on `listen_channel`, which PostgreSQL sends
--   at commit, once per user and transaction; it wakes that user's streams in every API
--   process. From arrays, never from a join: on Citus, a column default of an INSERT ...
--   SELECT over distributed tables runs on the workers, and the xid must be this node's.
WITH logged AS (
    INSERT INTO inbox_changes (user_id, item_id, change)
    SELECT t.user_id, t.item_id, %(change)s::text
    FROM unnest(%(user_ids)s::text[], %(item_ids)s::text[]) AS t(user_id, item_id)
    RETURNING user_id
)
SELECT count(pg_notify(%(listen_channel)s::text, u.user_id)) AS notified
FROM (SELECT DISTINCT user_id FROM logged) AS u;

-- name: inbox_changes_since
-- returns: rows (position text, change text, item_id text): position is the snapshot now
--   (on every row; one row with change NULL when nothing changed); then the user's changes
--   not visible in the snapshot `since`, in commit-independent log order.
-- purpose: the live stream's read, in a REPEATABLE READ transaction with the page of the
--   new items (inbox_page with ids), so both see the same snapshot. A change is new when
--   its transaction had not committed at `since`: xid >= its xmin, and not visible in it.
SELECT pg_current_snapshot()::text AS position, c.change, c.item_id
FROM (SELECT 1) AS here
LEFT JOIN LATERAL (
    SELECT ch.change, ch.item_id, ch.xid, ch.created_at
    FROM inbox_changes AS ch
    WHERE ch.user_id = %(user_id)s
      AND ch.xid >= pg_snapshot_xmin(%(since)s::pg_snapshot)
      AND NOT pg_visible_in_snapshot(ch.xid, %(since)s::pg_snapshot)
) AS c ON true
ORDER BY c.xid, c.created_at;

-- name: inbox_users_changed_since
-- returns: rows (user_id text): the users with changes not visible in the snapshot `since`
-- purpose: an API process's listener that lost its connection wakes only the streams of
--   these users when it is back (`since`: the last snapshot taken on the lost connection,
--   by which every NOTIFY before it had been heard), not every stream it holds.
SELECT DISTINCT user_id FROM inbox_changes
WHERE xid >= pg_snapshot_xmin(%(since)s::pg_snapshot)
  AND NOT pg_visible_in_snapshot(xid, %(since)s::pg_snapshot);

-- name: inbox_heard
-- returns: one row (position text): the snapshot now, on the listener's own connection
-- purpose: the listener's probe: proves the connection alive, and marks that every NOTIFY
--   of a transaction visible in it has been heard (PostgreSQL sends them before it answers).
SELECT pg_current_snapshot()::text AS position;

-- name: inbox_position
-- returns: one row (position text): the snapshot now.
-- purpose: where a new live stream starts: every change after it is sent.
SELECT pg_current_snapshot()::text AS position;
