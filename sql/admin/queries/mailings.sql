-- name: admin_mailings_list
-- returns: rows (id bigint, name text, event_type text, audience text, topic text,
--   listed integer, status text, created_by text, created_at timestamptz, send_at
--   timestamptz, event_status text, deliveries bigint, finished bigint), newest first.
-- purpose: the mailings page: each mailing with its event's deliveries so far (finished =
--   no longer pending), for its progress bar.
WITH listed AS (
    SELECT m.* FROM mailings AS m ORDER BY m.id DESC LIMIT %(limit)s
),
-- Per event, not per mailing row: on Citus one aggregate over the shards (a LATERAL join
-- of the coordinator's mailings with the distributed tables is refused).
progress AS (
    SELECT n.event_id, count(*) AS deliveries,
           count(*) FILTER (WHERE o.status <> 'pending') AS finished
    FROM notifications AS n
    JOIN outbox AS o ON o.notification_id = n.id AND o.bucket = n.bucket
    WHERE n.event_id IN (SELECT l.event_id FROM listed AS l WHERE l.event_id IS NOT NULL)
    GROUP BY n.event_id
)
SELECT m.id, m.name, m.event_type, m.audience, m.topic,
       cardinality(m.user_ids) AS listed, m.status, m.created_by, m.created_at, m.send_at,
       e.status AS event_status,
       coalesce(p.deliveries, 0) AS deliveries, coalesce(p.finished, 0) AS finished
FROM listed AS m
LEFT JOIN events AS e ON e.id = m.event_id
LEFT JOIN progress AS p ON p.event_id = m.event_id
ORDER BY m.id DESC;

-- name: admin_mailing_get
-- returns: zero or one row (every mailings column, event_status text, materialized_at
--   timestamptz).
-- purpose: one mailing for its page, with its event's state.
SELECT m.*, e.status AS event_status, e.materialized_at
FROM mailings AS m
LEFT JOIN events AS e ON e.id = m.event_id
WHERE m.id = %(id)s;

-- name: admin_mailing_lock
-- returns: zero or one row (every mailings column)
-- purpose: hold a mailing while it is changed, sent or cancelled, so that two clicks on
--   "send" (or a send and a cancel) are made one after the other, the second seeing the
--   first's outcome.
SELECT * FROM mailings WHERE id = %(id)s FOR UPDATE;

-- name: admin_mailing_insert
-- returns: one row (id bigint)
-- purpose: a new draft mailing.
INSERT INTO mailings (name, event_type, content, data, audience, topic, user_ids, send_at,
                      created_by)
VALUES (%(name)s, %(event_type)s, %(content)s::jsonb, %(data)s::jsonb, %(audience)s,
        %(topic)s, %(user_ids)s, %(send_at)s, %(created_by)s)
RETURNING id;

-- name: admin_mailing_update
-- returns: zero or one row (id bigint): none unless the mailing is still a draft.
-- purpose: save an edited draft (one that was sent or cancelled no longer changes).
UPDATE mailings
SET name = %(name)s, event_type = %(event_type)s, content = %(content)s::jsonb,
    data = %(data)s::jsonb, audience = %(audience)s, topic = %(topic)s,
    user_ids = %(user_ids)s, send_at = %(send_at)s, updated_at = now()
WHERE id = %(id)s AND status = 'draft'
RETURNING id;

-- name: admin_mailing_sent
-- returns: nothing
-- purpose: record that a mailing became its event (status 'sent').
UPDATE mailings
SET status = 'sent', event_id = %(event_id)s::uuid, sent_at = now(), updated_at = now()
WHERE id = %(id)s;

-- name: admin_mailing_cancelled
-- returns: nothing
-- purpose: record that a mailing was cancelled (before or after it was sent).
UPDATE mailings
SET status = 'cancelled', cancelled_at = now(), updated_at = now()
WHERE id = %(id)s;

-- name: admin_cancel_event
-- returns: zero or one row (previous text, suppressed bigint, job_removed boolean): see
--   sql/notify/functions/cancel_event.sql; none for an unknown event.
-- purpose: cancel what of a mailing's event has not gone out: a scheduled one's job, the
--   fan-out still to come and the pending deliveries.
SELECT previous, suppressed, job_removed FROM cancel_event(%(event_id)s::uuid);

-- name: admin_audience_size
-- returns: one row (users bigint): the users the recipients would reach now.
-- purpose: a mailing's audience size before it is sent, counted with the fan-out's own
--   notify_audience() over every user id (all users, a topic's members, the known ones
--   among listed ids; no upper bound).
SELECT count(*) AS users
FROM notify_audience(%(recipients)s::jsonb, '', NULL);

-- name: admin_preview_user
-- returns: zero or one row (id text, locale text)
-- purpose: the user a mailing is previewed for, and the locale their notifications use.
SELECT id, locale FROM users WHERE id = %(id)s;

-- name: admin_topics
-- returns: rows (topic text): up to `limit` topics, in order.
-- purpose: suggestions for a mailing's topic, by a loose scan of user_topics' primary key
--   (one probe per topic rather than a read of every membership).
WITH RECURSIVE topics AS (
    SELECT min(ut.topic) AS topic FROM user_topics AS ut
    UNION ALL
    SELECT (SELECT min(ut.topic) FROM user_topics AS ut WHERE ut.topic > t.topic)
    FROM topics AS t
    WHERE t.topic IS NOT NULL
)
SELECT topic FROM topics WHERE topic IS NOT NULL LIMIT %(limit)s;

-- name: admin_mailing_fanout
-- returns: one row (chunks bigint, chunks_done bigint, covered bigint, recipients jsonb,
--   cursor text): the event's audience chunks claimed so far, those materialized, the
--   users they covered, and where the fan-out stands (recipients, the last id claimed)
-- purpose: a sent mailing's progress before its deliveries exist: the fan-out's own
--   count, by event_chunks' primary key (event_id, lo). An event's chunks are few (its
--   audience over [notify].chunk_size).
SELECT count(c.lo) AS chunks,
       count(c.lo) FILTER (WHERE c.covered IS NOT NULL) AS chunks_done,
       coalesce(sum(c.covered), 0) AS covered,
       e.recipients, e.cursor
FROM events AS e
LEFT JOIN event_chunks AS c ON c.event_id = e.id
WHERE e.id = %(event_id)s
GROUP BY e.recipients, e.cursor;

-- name: admin_audience_left
-- returns: one row (users bigint): the users of an audience after user id `after`
-- purpose: how much of a mailing's audience the fan-out has not claimed yet (its cursor
--   on), counted with its own notify_audience(); read only while the fan-out runs.
SELECT count(*) AS users
FROM notify_audience(%(recipients)s::jsonb, %(after)s, NULL);
