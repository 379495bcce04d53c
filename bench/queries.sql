-- name: bench_counts
-- returns: one row (marks bigint, outbox bigint, jobs bigint, delivered bigint)
-- purpose: end-of-run accounting: every 200 "recorded" is exactly one mark and one outbox row.
SELECT (SELECT count(*) FROM seen_marks) AS marks,
       (SELECT count(*) FROM outbox) AS outbox,
       (SELECT count(*) FROM procrastinate_jobs) AS jobs,
       (SELECT count(*) FROM outbox WHERE status = 'delivered') AS delivered;

-- name: naive_insert_mark
-- returns: rows (outbox_id bigint): one row when the mark was new, none for a repeat
-- purpose: naive baseline, one statement per mark.
INSERT INTO seen_marks (tag, item_id, subject_key, subject_kind, subject, expires_at, outbox_id,
                        bucket)
VALUES (%(tag)s, %(item_id)s, %(subject_key)s, %(subject_kind)s, %(subject)s::jsonb,
        now() + make_interval(secs => %(remember_for_s)s),
        nextval(pg_get_serial_sequence('outbox', 'id')), subject_bucket(%(subject_key)s))
ON CONFLICT DO NOTHING
RETURNING outbox_id;

-- name: naive_insert_outbox
-- returns: nothing
-- purpose: naive baseline, one outbox row per statement.
INSERT INTO outbox (id, kind, consumer, ordering_key, payload, bucket)
VALUES (%(outbox_id)s, 'seen', %(consumer)s, %(subject_key)s,
        jsonb_build_object('event_type', %(subject_kind)s::text, 'tag', %(tag)s::text,
                           'id', %(item_id)s::text, 'seen_at', now(),
                           'subject', %(subject)s::jsonb),
        subject_bucket(%(subject_key)s));

-- name: naive_defer_job
-- returns: one row (ids bigint[])
-- purpose: naive baseline, one Procrastinate job per mark via Procrastinate's own defer
--   function (what app.defer_async does), inside the request's transaction.
SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
    'dispatch', 'dispatcher.deliver_one', 0, NULL, NULL,
    jsonb_build_object('outbox_id', %(outbox_id)s::bigint), NULL
)::procrastinate_job_to_defer_v1]) AS ids;

-- name: drop_database
-- returns: nothing
-- purpose: drop a benchmark database ({name} is composed as an identifier).
DROP DATABASE IF EXISTS {name} WITH (FORCE);

-- name: create_database
-- returns: nothing
-- purpose: create a benchmark database ({name} is composed as an identifier).
CREATE DATABASE {name};

-- name: bench_clear_jobs
-- returns: nothing
-- purpose: drop the write path's wake-up jobs before a timed run, so they add no noise.
DELETE FROM procrastinate_jobs;

-- name: bench_pending_ids
-- returns: rows (id bigint)
-- purpose: the outbox rows one benchmark round filled (item ids start with its prefix).
SELECT id FROM outbox WHERE status = 'pending' AND payload->>'id' LIKE %(prefix)s ORDER BY id;

-- name: bench_delivered_between
-- returns: one row (delivered bigint)
-- purpose: progress of a timed run: delivered rows in the round's id range.
SELECT count(*) FROM outbox WHERE id BETWEEN %(lo)s AND %(hi)s AND status = 'delivered';

-- name: fanout_seed_users
-- returns: nothing
-- purpose: bench/fanout.py's audience: `users` users with ids u0000001..., 90 % with an
--   email, half with a phone, 60 % with one push device; 5 % with preferences (some
--   muted, some with content email off, some with quiet hours on push), so the fan-out
--   applies every rule it has on a realistic mix.
WITH seeded AS (
    INSERT INTO users (id, email, phone, locale, timezone)
    SELECT 'u' || lpad(n::text, 7, '0'),
           CASE WHEN n %% 10 <> 0 THEN 'u' || n || '@example.test' END,
           CASE WHEN n %% 2 = 0 THEN '+1555' || lpad(n::text, 7, '0') END,
           CASE WHEN n %% 3 = 0 THEN 'ru' ELSE 'en' END,
           CASE WHEN n %% 4 = 0 THEN 'Europe/Moscow' END
    FROM generate_series(1, %(users)s) AS n
    RETURNING id
),
devices AS (
    INSERT INTO push_devices (user_id, token, platform)
    SELECT id, 'tok-' || id, 'android' FROM seeded WHERE right(id, 1) IN ('0', '1', '2', '3', '4', '5')
)
INSERT INTO preferences (user_id, muted, channels, quiet_hours)
SELECT id, right(id, 2) = '07',
       CASE WHEN right(id, 2) = '17' THEN '{"content": {"email": false}}'::jsonb ELSE '{}' END,
       CASE WHEN right(id, 2) = '27'
            THEN '{"push": {"start": "00:00", "end": "23:59"}}'::jsonb ELSE '{}' END
FROM seeded WHERE right(id, 2) IN ('07', '17', '27', '37', '47');

-- name: fanout_create_database_from
-- returns: nothing
-- purpose: a copy of the seeded template database for one run ({name}, {template}).
CREATE DATABASE {name} TEMPLATE {template};

-- name: fanout_counts
-- returns: one row (notifications bigint, outbox bigint)
-- purpose: what a run materialized.
SELECT (SELECT count(*) FROM notifications) AS notifications,
       (SELECT count(*) FROM outbox) AS outbox;

-- name: naive_user_facts
-- returns: one row (email text, phone text, devices bigint, muted boolean, channels jsonb,
--   quiet_hours jsonb), or none for an unknown user
-- purpose: the per-user baseline reads one recipient's contacts and preferences.
SELECT u.email, u.phone, (SELECT count(*) FROM push_devices AS d WHERE d.user_id = u.id),
       coalesce(p.muted, false), coalesce(p.channels, '{}'), coalesce(p.quiet_hours, '{}')
FROM users AS u LEFT JOIN preferences AS p ON p.user_id = u.id
WHERE u.id = %(user_id)s;

-- name: naive_insert_notification
-- returns: one row (id bigint)
-- purpose: the per-user baseline: one notification per statement.
INSERT INTO notifications (event_id, user_id, type, category, suppressed, bucket)
VALUES (%(event_id)s, %(user_id)s, %(type)s, %(category)s, %(suppressed)s::jsonb,
        user_bucket(%(user_id)s))
RETURNING id;

-- name: naive_insert_delivery
-- returns: nothing
-- purpose: the per-user baseline: one outbox row per statement.
INSERT INTO outbox (kind, consumer, ordering_key, payload, notification_id, bucket)
VALUES ('notification', %(channel)s, %(user_id)s, '{}', %(notification_id)s,
        user_bucket(%(user_id)s));

-- name: naive_user_ids
-- returns: rows (id text): the first `limit` users in id order
-- purpose: the per-user baseline's audience.
SELECT id FROM users ORDER BY id LIMIT %(limit)s;

-- name: retention_seed
-- returns: nothing
-- purpose: bench/prune.py's backlog: `rows` delivered rows of the bench's consumer, shaped
--   like the intake's, last changed evenly between `oldest` and `newest` ago, each with
--   the one attempt that delivered it.
WITH seeded AS (
    INSERT INTO outbox (kind, consumer, ordering_key, payload, status, attempts,
                        next_attempt_at, created_at, updated_at, delivered_at, bucket)
    SELECT 'seen', 'promotions', 'client:user-' || (n %% 1000),
           jsonb_build_object('event_type', 'client', 'tag', 'promotions', 'id', 'seed-' || n,
                              'seen_at', t.at,
                              'subject', jsonb_build_object('user_id', 'user-' || (n %% 1000),
                                                            'uid', 'uid-' || (n %% 1000))),
           'delivered', 1, t.at, t.at, t.at, t.at, subject_bucket('client:user-' || (n %% 1000))
    FROM generate_series(1, %(rows)s) AS n
    CROSS JOIN LATERAL (
        SELECT now() - %(oldest)s::interval
               + (%(oldest)s::interval - %(newest)s::interval) * (n::float8 / %(rows)s) AS at
    ) AS t
    ORDER BY n
    RETURNING id, bucket, consumer, updated_at
)
INSERT INTO delivery_attempts (outbox_id, bucket, attempt, consumer, started_at, duration_ms,
                               outcome, status_code, updated_at)
SELECT id, bucket, 1, consumer, updated_at, 12.5, 'delivered', 200, updated_at FROM seeded;

-- name: retention_counts
-- returns: one row (delivered bigint, pending bigint, attempts bigint)
-- purpose: end-of-run accounting of bench/prune.py: only the young delivered rows and
--   their attempts are left, and every intake row is there.
SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM delivery_attempts) AS attempts
FROM outbox;

-- name: retention_make_day
-- returns: one row (made integer): the partitions made
-- purpose: bench/prune.py --days: the day partition of `day` in outbox and in
--   delivery_attempts, made before the old rows are seeded so that they land in it.
SELECT ensure_partitions('outbox', %(day)s, %(day)s)
       + ensure_partitions('delivery_attempts', %(day)s, %(day)s) AS made;

-- name: retention_rows_by_partition
-- returns: rows (part text, n bigint)
-- purpose: bench/prune.py --days: where the seeded outbox rows landed.
SELECT tableoid::regclass::text AS part, count(*) AS n FROM outbox GROUP BY 1 ORDER BY 1;

-- name: retention_days_left
-- returns: one row (days integer): how many of the two named partitions still exist
-- purpose: bench/prune.py --days: the seeded day went whole, in both tables.
SELECT (to_regclass(%(outbox)s) IS NOT NULL)::int
       + (to_regclass(%(attempts)s) IS NOT NULL)::int AS days;

-- name: digest_seed_likes
-- returns: nothing
-- purpose: bench/digest.py's backlog: `items` likes spread evenly over the first
--   `recipients` users (ids u0000001..., as fanout_seed_users makes them), each user's on
--   `keys` of their comments, by actors from a pool of 1,000 names: an event per like
--   (its data is what the digest's `last` shows) and an open digest item, all made two
--   hours ago over ten minutes, so every digest is due under comment_likes' window.
WITH likes AS MATERIALIZED (
    SELECT n, gen_random_uuid() AS event_id,
           'u' || lpad((n %% %(recipients)s + 1)::text, 7, '0') AS user_id,
           'c' || (n / %(recipients)s) %% %(keys)s AS comment_id,
           'actor-' || (n::bigint * 7919) %% 1000 AS actor,
           now() - interval '2 hours' + make_interval(secs => (n %% 600)) AS at
    FROM generate_series(0, %(items)s - 1) AS n
),
logged AS (
    INSERT INTO events (id, producer, idempotency_key, type, recipients, data, status,
                        notified, send_at, created_at, updated_at, materialized_at)
    SELECT event_id, 'bench', 'like-' || n, 'comment_likes',
           jsonb_build_object('user_ids', jsonb_build_array(user_id)),
           jsonb_build_object('actor', actor, 'comment_id', comment_id,
                              'comment_url', 'https://x.test/c/' || comment_id),
           'done', 1, at, at, at, at
    FROM likes
)
INSERT INTO digest_items (event_id, user_id, type, digest_key, actor, created_at, updated_at,
                          bucket, data)
SELECT event_id, user_id, 'comment_likes', comment_id, actor, at, at, user_bucket(user_id),
       jsonb_build_object('actor', actor, 'comment_id', comment_id,
                          'comment_url', 'https://x.test/c/' || comment_id)
FROM likes
ORDER BY n;

-- name: digest_counts
-- returns: one row (open bigint, stamped bigint, notifications bigint, outbox bigint)
-- purpose: end-of-run accounting of bench/digest.py: every item stamped, one notification
--   per digest.
--   Each count a subquery of its own, which Citus (bench/cluster.py) runs too.
SELECT (SELECT count(*) FROM digest_items WHERE notification_id IS NULL) AS open,
       (SELECT count(*) FROM digest_items WHERE notification_id IS NOT NULL) AS stamped,
       (SELECT count(*) FROM notifications) AS notifications,
       (SELECT count(*) FROM outbox) AS outbox;

-- name: naive_digest_recipients
-- returns: rows (user_id text): the first `limit` users with open digest items
-- purpose: the per-recipient baseline's worklist.
SELECT DISTINCT user_id FROM digest_items
WHERE notification_id IS NULL
ORDER BY user_id
LIMIT %(limit)s;

-- name: naive_open_items
-- returns: rows (id bigint, type text, digest_key text, actor text, event_id uuid,
--   created_at timestamptz), oldest first
-- purpose: the per-recipient baseline reads one recipient's open items.
SELECT id, type, digest_key, actor, event_id, created_at FROM digest_items
WHERE user_id = %(user_id)s AND notification_id IS NULL
ORDER BY id;

-- name: naive_event_data
-- returns: one row (data jsonb)
-- purpose: the per-recipient baseline reads the newest item's event data.
SELECT data FROM events WHERE id = %(event_id)s;

-- name: naive_insert_digest_event
-- returns: nothing
-- purpose: the per-recipient baseline: one events row per digest sent.
INSERT INTO events (id, producer, idempotency_key, type, recipients, data, status, notified)
VALUES (%(event_id)s, 'digest', %(event_id)s::text, %(type)s, '{"digest": true}', '{}', 'done', 1);

-- name: naive_insert_digest_notification
-- returns: one row (id bigint)
-- purpose: the per-recipient baseline: one digest notification per statement.
INSERT INTO notifications (event_id, user_id, type, category, suppressed, data, bucket)
VALUES (%(event_id)s, %(user_id)s, %(type)s, %(category)s, %(suppressed)s::jsonb,
        %(data)s::jsonb, user_bucket(%(user_id)s))
RETURNING id;

-- name: naive_stamp_items
-- returns: nothing
-- purpose: the per-recipient baseline marks one digest's items sent.
UPDATE digest_items SET notification_id = %(notification_id)s, flushed_at = now(),
                        updated_at = now()
WHERE id = ANY(%(ids)s::bigint[]);

-- name: backend_pids
-- returns: rows (pid int): one per server process connected to the database
-- purpose: bench/interleave.py adds up the CPU time the database spent for one API under test.
SELECT pid FROM pg_stat_activity WHERE datname = %(dbname)s;

-- name: stream_seed_users
-- returns: nothing
-- purpose: bench/inbox_stream.py's users: user-0 ... user-(N-1), the subjects of the client
--   tokens of bench.harness.tokens_file.
INSERT INTO users (id, locale)
SELECT 'user-' || n, 'en' FROM generate_series(0, %(users)s - 1) AS n;

-- name: stream_pending_inbox
-- returns: rows (outbox_id bigint, notification_id bigint, event_id uuid): the pending
--   deliveries of inbox channel `channel`
-- purpose: what bench/inbox_stream.py delivers through the dispatcher's own calls: the
--   seeded pages before the streams open, then the changes it times.
SELECT o.id, n.id, n.event_id
FROM outbox AS o
JOIN notifications AS n ON n.id = o.notification_id AND n.bucket = o.bucket
WHERE o.status = 'pending' AND o.consumer = %(channel)s
ORDER BY o.id;

-- name: stream_listeners
-- returns: rows (pid int): the API processes' inbox listeners on this database
-- purpose: bench/inbox_stream.py --reconnect: cut them, and see them back.
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'mark-notify-inbox-listener';

-- name: stream_inbox_items
-- returns: rows (outbox_id bigint, user_id text, notification_id bigint): of outbox rows `ids`
-- purpose: what each inbox delivery of bench/inbox_stream.py logs for the live inbox.
SELECT o.id, n.user_id, n.id
FROM outbox AS o
JOIN notifications AS n ON n.id = o.notification_id AND n.bucket = o.bucket
WHERE o.id = ANY(%(ids)s::bigint[]);
