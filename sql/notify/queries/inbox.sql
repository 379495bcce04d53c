-- name: inbox_page
-- returns: rows (unseen bigint, id bigint, event_id uuid, type text, category text,
--   created_at timestamptz, data jsonb, locale text, seen boolean), newest first: up to
--   `limit` notifications older than `before` (none: from the newest). unseen is on every
--   row; when the page is empty there is one row with only unseen set.
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
    ORDER BY mine.id DESC
    LIMIT %(limit)s
)
SELECT unseen.unseen, page.id, page.event_id, page.type, page.category, page.created_at,
       page.data, page.locale, page.seen
FROM unseen
LEFT JOIN page ON true
ORDER BY page.id DESC;
