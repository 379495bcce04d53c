-- 0012_fanout_pushdown down: uuid_v7_of, block_id, take_blocks, commutative_writes, seconds_after, notify_audience_sql, notify_audience, notify_audience_bound, notify_queue, notify_materialize_chunk, digest_due_at, flush_digests, as 0011_user_bucket left them.

ALTER TABLE digest_items DROP COLUMN data;
DROP TABLE buckets;
DROP INDEX user_topics_bucket_idx;
DROP INDEX users_bucket_idx;
ALTER TABLE digest_items ALTER COLUMN id SET INCREMENT BY 1;
ALTER TABLE notifications ALTER COLUMN id SET INCREMENT BY 1;
ALTER TABLE outbox ALTER COLUMN id SET INCREMENT BY 1;

-- From sql/migrations/0011_user_bucket.up.sql.
-- From sql/digests/functions/flush_digests.sql.
-- Send the due digests, in one set-based statement: per digest one notification whose
-- data is {total, actor_count, first_actors (the first show_actors distinct actors,
-- oldest first), last_actors (the latest ones, newest first), others (actor_count minus
-- first_actors), digest_key, last (the newest item's event data)}, and its outbox rows per
-- channel by the instant fan-out's own rules (notify_type_routes(), notify_suppression(),
-- notify_quiet_hours(), notify_send_at()). The items are stamped with their notification
-- and the dispatchers woken. Due is digest_due_at(), as open_digests shows it. A
-- notification is one per (event, user): the flush makes one `events` row (producer
-- 'digest') per type and n, holding each recipient's n-th digest of that type, so n is 1
-- unless a recipient has several keys due at once. Items of recipients erased meanwhile
-- are deleted, unsent. Returns the digests sent; commits with the caller's transaction.
--
-- Race-free, with flushes side by side and events arriving meanwhile:
-- 1. Only a flush changes an open item, and only under the advisory lock taken first,
--    without waiting: a second flush meanwhile returns 0 at once (the next scheduled one
--    takes what became due). One lock rather than one per digest: each lock held takes a
--    lock-table entry, and the table holds max_locks_per_transaction (64) x connections
--    in all, so a flush of 100,000 digests would run out of shared memory; and the work
--    is one statement anyway.
-- 2. The statement that reads the items starts after the lock is held, so its snapshot
--    (READ COMMITTED: a new one per statement) shows every earlier flush's stamps (a
--    transaction's locks are released only once its commit is visible): no item is read
--    as open after it was sent.
-- 3. Items committed after that snapshot are seen by no part of the statement (the UPDATE
--    that stamps included): they stay open and go to the next digest. Intake only inserts
--    items, so it cannot change the set being flushed.
-- 4. The UPDATE stamps only items still open; if any changed under the flush anyway (a
--    writer that skipped the lock), fewer are stamped than were counted and the flush
--    raises, so everything rolls back rather than send a digest twice. (Under REPEATABLE
--    READ, whose snapshot may predate another flush's commit, the UPDATE of an item that
--    flush stamped fails with a serialization error: also a roll-back.)
CREATE OR REPLACE FUNCTION flush_digests() RETURNS integer
-- A flush of a million items sorts and aggregates them in memory.
LANGUAGE plpgsql SET work_mem = '256MB' AS $$
DECLARE
    -- Names this flush's events: a recipient's n-th digest of a type goes under the event
    -- md5(flush:type:n), so no row needs a join to find its event.
    flush text := gen_random_uuid()::text;
    flushed integer;
    expected bigint;
    stamped_n bigint;
    woken text[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('mark-notify:flush_digests', 0)) THEN
        RETURN 0;
    END IF;

    -- One pass over the open items, then one row per due digest all the way (its
    -- notification id and event id made up front). No two large sets derived here are
    -- joined to each other, only to tables through their indexes or to the few routes:
    -- the planner expects a handful of due digests (it cannot know how many are due), and
    -- a nested loop between two such sets would take minutes for 100,000 digests.
    --
    -- Grouped by the bucket too (a function of the user, so the same groups): on Citus
    -- each shard aggregates its own items, and `open` reaches the coordinator as a
    -- result, which the rest joins with events and the catalog there.
    WITH per_actor AS (
        SELECT i.bucket, i.user_id, i.type, i.digest_key, i.actor, count(*) AS items,
               min(i.created_at) AS first_at, max(i.created_at) AS last_at,
               min(i.id) AS first_id, max(i.id) AS last_id,
               (array_agg(i.event_id ORDER BY i.id DESC))[1] AS last_event
        FROM digest_items AS i
        WHERE i.notification_id IS NULL
        GROUP BY i.bucket, i.user_id, i.type, i.digest_key, i.actor
    ),
    open AS MATERIALIZED (
        SELECT bucket, user_id, type, digest_key, sum(items)::bigint AS items,
               min(first_at) AS first_at, max(last_at) AS last_at,
               (array_agg(last_event ORDER BY last_id DESC))[1] AS last_event,
               count(actor) AS actor_count,
               array_agg(actor ORDER BY first_id) FILTER (WHERE actor IS NOT NULL) AS by_first,
               array_agg(actor ORDER BY last_id DESC) FILTER (WHERE actor IS NOT NULL)
                   AS by_last
        FROM per_actor
        GROUP BY bucket, user_id, type, digest_key
    ),
    due AS MATERIALIZED (
        SELECT o.user_id, o.type, o.digest_key, o.items, u.id IS NOT NULL AS known,
               CASE WHEN u.id IS NOT NULL
                    THEN nextval(pg_get_serial_sequence('notifications', 'id')) END
                   AS notification_id,
               md5(flush || ':' || o.type || ':'
                   || row_number() OVER (PARTITION BY o.user_id, o.type ORDER BY o.digest_key)
               )::uuid AS event_id,
               t.category, t.priority, c.transactional, c.defaults, u.email, u.phone,
               coalesce(u.timezone, 'UTC') AS timezone,
               jsonb_build_object(
                   'total', o.items,
                   'actor_count', o.actor_count,
                   'first_actors', coalesce(to_jsonb(o.by_first[1:t.digest_show_actors]), '[]'),
                   'last_actors', coalesce(to_jsonb(o.by_last[1:t.digest_show_actors]), '[]'),
                   'others', o.actor_count
                             - coalesce(cardinality(o.by_first[1:t.digest_show_actors]), 0),
                   'digest_key', o.digest_key,
                   'last', e.data) AS data
        FROM open AS o
        LEFT JOIN events AS e ON e.id = o.last_event
        JOIN notify_event_types AS t ON t.name = o.type AND t.enabled AND t.mode = 'digest'
        JOIN notify_categories AS c ON c.name = t.category
        LEFT JOIN users AS u ON u.id = o.user_id
        WHERE digest_due_at(t.digest_window, t.digest_every_s, t.digest_at, t.digest_quiet_s,
                            t.digest_max_wait_s, t.digest_max_items,
                            coalesce(u.timezone, 'UTC'), o.first_at, o.last_at, o.items)
              <= now()
    ),
    flushes AS MATERIALIZED (
        SELECT d.event_id AS id, d.type, count(*) AS digests
        FROM due AS d
        WHERE d.known
        GROUP BY d.event_id, d.type
    ),
    logged AS (
        INSERT INTO events (id, producer, idempotency_key, type, recipients, data, status,
                            notified, materialized_at)
        SELECT f.id, 'digest', 'flush:' || f.id, f.type, '{"digest": true}', '{}', 'done',
               f.digests, now()
        FROM flushes AS f
    ),
    routes AS MATERIALIZED (
        SELECT t.type, r.channel, r.kind, r.escalation, r.delay_s
        FROM (SELECT DISTINCT f.type FROM flushes AS f) AS t
        CROSS JOIN LATERAL notify_type_routes(t.type) AS r
    ),
    -- Each digest's channels decided in one row (the routes of its type are a handful):
    -- what is suppressed and why, and the channels owed with their delay and quiet hours.
    judged AS MATERIALIZED (
        SELECT d.notification_id, d.event_id, d.user_id, d.type, d.category, d.data, d.timezone,
               v.suppressed, v.channels, v.escalations, v.delays, v.quiet
        FROM due AS d
        LEFT JOIN preferences AS p ON p.user_id = d.user_id
        CROSS JOIN LATERAL (
            SELECT jsonb_object_agg(x.channel, x.verdict) FILTER (WHERE x.verdict IS NOT NULL)
                       AS suppressed,
                   array_agg(x.channel) FILTER (WHERE x.verdict IS NULL) AS channels,
                   array_agg(x.escalation) FILTER (WHERE x.verdict IS NULL) AS escalations,
                   array_agg(x.delay_s) FILTER (WHERE x.verdict IS NULL) AS delays,
                   array_agg(x.quiet) FILTER (WHERE x.verdict IS NULL) AS quiet
            FROM (
                SELECT r.channel, r.escalation, r.delay_s,
                       notify_suppression(d.transactional, p.muted, p.channels, d.defaults,
                                          d.category, r.channel, r.kind, d.email, d.phone,
                                          EXISTS (SELECT 1 FROM push_devices AS pd
                                                  WHERE pd.user_id = d.user_id)) AS verdict,
                       notify_quiet_hours(d.transactional, d.priority, p.quiet_hours, r.channel)
                           AS quiet
                FROM routes AS r
                WHERE r.type = d.type
                -- Kept a subquery, so each route's verdict is worked out once, not once
                -- per aggregate above that reads it.
                OFFSET 0
            ) AS x
        ) AS v
        WHERE d.known
    ),
    notified AS (
        INSERT INTO notifications (id, bucket, event_id, user_id, type, category, suppressed,
                                   data)
        OVERRIDING SYSTEM VALUE
        SELECT j.notification_id, user_bucket(j.user_id), j.event_id, j.user_id, j.type,
               j.category, j.suppressed, j.data
        FROM judged AS j
        ORDER BY j.notification_id
    ),
    queued AS (
        INSERT INTO outbox (bucket, kind, consumer, ordering_key, payload, next_attempt_at,
                            notification_id, reason)
        SELECT user_bucket(j.user_id), 'notification', x.channel, j.user_id,
               CASE WHEN x.escalation THEN '{"escalation": true}'::jsonb ELSE '{}'::jsonb END,
               w.until, j.notification_id, CASE WHEN w.until > o.owed_at THEN 'quiet_hours' END
        FROM judged AS j
        CROSS JOIN LATERAL unnest(j.channels, j.escalations, j.delays, j.quiet)
            AS x(channel, escalation, delay_s, quiet)
        CROSS JOIN LATERAL (SELECT now() + make_interval(secs => x.delay_s) AS owed_at) AS o
        CROSS JOIN LATERAL (SELECT notify_send_at(o.owed_at, j.timezone, x.quiet) AS until) AS w
        ORDER BY j.notification_id, x.channel
        RETURNING consumer
    ),
    stamped AS (
        UPDATE digest_items AS i
        SET notification_id = d.notification_id, flushed_at = now(), updated_at = now()
        FROM due AS d
        WHERE d.known AND i.user_id = d.user_id AND i.type = d.type
          AND i.digest_key = d.digest_key AND i.notification_id IS NULL
        RETURNING 1
    ),
    forgotten AS (
        DELETE FROM digest_items AS i
        USING due AS d
        WHERE NOT d.known AND i.user_id = d.user_id AND i.type = d.type
          AND i.digest_key = d.digest_key AND i.notification_id IS NULL
    )
    SELECT (SELECT count(*) FROM due WHERE known),
           (SELECT coalesce(sum(items), 0) FROM due WHERE known),
           (SELECT count(*) FROM stamped), ARRAY(SELECT DISTINCT consumer FROM queued)
    INTO flushed, expected, stamped_n, woken;

    IF stamped_n <> expected THEN
        RAISE EXCEPTION 'flush_digests: % items counted, % stamped: changed during the flush',
            expected, stamped_n;
    END IF;
    IF cardinality(woken) > 0 THEN
        PERFORM wake_dispatchers(woken, 'dispatch', 'dispatcher.wake');
    END IF;
    RETURN flushed;
END
$$;

-- From sql/migrations/0004_schedule.up.sql.
-- When an open digest is due, by its type's window (NULL: the type is no longer in digest
-- mode, and its items wait): fixed, every_s after the first item; daily, at the next `at`
-- after the first item in the recipient's time zone; sliding, once no item came for
-- quiet_s, at most max_wait_s after the first. With max_items items it is due at once (at
-- its newest item). One expression, so the planner inlines it.
CREATE OR REPLACE FUNCTION digest_due_at(
    win text, every_s float8, at time, quiet_s float8, max_wait_s float8, max_items integer,
    tz text, first_at timestamptz, last_at timestamptz, items bigint
) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT least(
        CASE win
            WHEN 'fixed' THEN first_at + make_interval(secs => every_s)
            WHEN 'sliding' THEN least(last_at + make_interval(secs => quiet_s),
                                      first_at + make_interval(secs => max_wait_s))
            WHEN 'daily' THEN ((first_at AT TIME ZONE tz)::date
                               + CASE WHEN (first_at AT TIME ZONE tz)::time < at THEN 0 ELSE 1 END
                               + at) AT TIME ZONE tz
        END,
        -- least() skips NULLs: this counts only when the digest is full.
        CASE WHEN items >= max_items THEN last_at END)
$$;

-- From sql/migrations/0011_user_bucket.up.sql.
-- From sql/notify/functions/notify_materialize_chunk.sql.
-- The fan-out of one claimed chunk: its recipients as notifications and outbox rows, in one
-- set-based statement. Per recipient and channel it applies, in this order: the global
-- mute and the category switches (not for transactional categories), a missing contact
-- (suppressed, kept on the notification), quiet hours (the row is due when they end; not
-- for transactional categories or high priority), and the escalation delay: the routes
-- and rules flush_digests() applies too (notify_type_routes(), notify_suppression(),
-- notify_quiet_hours(), notify_send_at()). A digest-mode type's recipients get a digest
-- item instead, under the event's data[digest_key], for flush_digests() to send. The
-- chunk's row is locked while it runs, so a chunk is done once; UNIQUE (event_id, user_id,
-- bucket) makes a repeat a no-op. Returns the recipients covered (0: already done by
-- another worker, or the event was cancelled: the chunk is closed with nobody covered).
CREATE OR REPLACE FUNCTION notify_materialize_chunk(p_event uuid, p_lo text, p_hi text) RETURNS integer
-- The chunk's sorts and aggregates fit in memory instead of spilling to disk.
LANGUAGE plpgsql SET work_mem = '64MB' AS $$
DECLARE
    ev events%ROWTYPE;
    et notify_event_types%ROWTYPE;
    cat notify_categories%ROWTYPE;
    chunk_covered integer;
    woken text[];
    due timestamptz;
BEGIN
    PERFORM 1 FROM event_chunks AS c
    WHERE c.event_id = p_event AND c.lo = p_lo AND c.covered IS NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- FOR KEY SHARE: chunks side by side do not block one another, but cancel_event()
    -- (FOR UPDATE) waits for this chunk's rows to be committed before it suppresses the
    -- pending ones, and a chunk that starts after a cancel sees it.
    SELECT * INTO STRICT ev FROM events AS e WHERE e.id = p_event FOR KEY SHARE;
    IF ev.status = 'cancelled' THEN
        UPDATE event_chunks AS c SET covered = 0, updated_at = now()
        WHERE c.event_id = p_event AND c.lo = p_lo;
        RETURN 0;
    END IF;
    SELECT * INTO STRICT et FROM notify_event_types AS t WHERE t.name = ev.type;
    SELECT * INTO STRICT cat FROM notify_categories AS c WHERE c.name = et.category;
    due := greatest(ev.send_at, now());

    IF et.mode = 'digest' THEN
        -- notify_event() checked that the key is there; a JSON null cannot group.
        IF ev.data ->> et.digest_key IS NULL THEN
            RAISE EXCEPTION 'event data lacks %', et.digest_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        WITH audience AS MATERIALIZED (
            SELECT a.id FROM notify_audience(ev.recipients, p_lo, p_hi) AS a
        ),
        gathered AS (
            INSERT INTO digest_items (bucket, event_id, user_id, type, digest_key, actor)
            SELECT user_bucket(a.id), ev.id, a.id, ev.type, ev.data ->> et.digest_key,
                   ev.data ->> et.digest_actor
            FROM audience AS a
            ORDER BY a.id
            ON CONFLICT (event_id, user_id, bucket) WHERE notification_id IS NULL DO NOTHING
        )
        SELECT count(*) INTO chunk_covered FROM audience;
    ELSE
        WITH audience AS MATERIALIZED (
            SELECT * FROM notify_audience(ev.recipients, p_lo, p_hi)
        ),
        decided AS MATERIALIZED (
            SELECT a.id AS user_id, r.channel, r.escalation,
                   notify_suppression(cat.transactional, p.muted, p.channels, cat.defaults,
                                      et.category, r.channel, r.kind, a.email, a.phone,
                                      EXISTS (SELECT 1 FROM push_devices AS d
                                              WHERE d.user_id = a.id)) AS suppressed,
                   due + make_interval(secs => r.delay_s) AS owed_at,
                   notify_quiet_hours(cat.transactional, et.priority, p.quiet_hours, r.channel)
                       AS quiet,
                   coalesce(a.timezone, 'UTC') AS timezone
            FROM audience AS a
            LEFT JOIN preferences AS p ON p.user_id = a.id
            CROSS JOIN notify_type_routes(et.name) AS r
        ),
        notified AS (
            INSERT INTO notifications (bucket, event_id, user_id, type, category, suppressed)
            SELECT user_bucket(user_id), ev.id, user_id, ev.type, et.category,
                   jsonb_object_agg(channel, suppressed) FILTER (WHERE suppressed IS NOT NULL)
            FROM decided
            GROUP BY user_id
            ORDER BY user_id
            ON CONFLICT (event_id, user_id, bucket) DO NOTHING
            RETURNING id, bucket, user_id
        ),
        queued AS (
            INSERT INTO outbox (bucket, kind, consumer, ordering_key, payload, next_attempt_at,
                                notification_id, reason)
            SELECT n.bucket, 'notification', d.channel, d.user_id,
                   CASE WHEN d.escalation THEN '{"escalation": true}'::jsonb
                        ELSE '{}'::jsonb END,
                   w.until, n.id, CASE WHEN w.until > d.owed_at THEN 'quiet_hours' END
            FROM decided AS d
            JOIN notified AS n USING (user_id)
            CROSS JOIN LATERAL (
                SELECT notify_send_at(d.owed_at, d.timezone, d.quiet) AS until
            ) AS w
            WHERE d.suppressed IS NULL
            ORDER BY n.id, d.channel
            RETURNING consumer
        )
        SELECT (SELECT count(*) FROM audience), ARRAY(SELECT DISTINCT consumer FROM queued)
        INTO chunk_covered, woken;
    END IF;

    IF cardinality(woken) > 0 THEN
        PERFORM wake_dispatchers(woken, 'dispatch', 'dispatcher.wake');
    END IF;
    UPDATE event_chunks AS c SET covered = chunk_covered, updated_at = now()
    WHERE c.event_id = p_event AND c.lo = p_lo;
    -- Last, so the event row is locked only for the end of this transaction.
    UPDATE events AS e SET notified = e.notified + chunk_covered,
                           updated_at = now()
    WHERE e.id = p_event;
    RETURN chunk_covered;
END
$$;

DROP FUNCTION IF EXISTS notify_queue(events uuid[], after text, upto text, due timestamptz, guard boolean, types text[], rows bigint);

-- From sql/migrations/0011_user_bucket.up.sql.
-- From sql/notify/functions/notify_audience_bound.sql.
-- The id of the n-th recipient after `after` (or of the last one, if fewer remain); NULL
-- when none remains. A chunk of the fan-out ends there. PL/pgSQL, as notify_audience().
CREATE OR REPLACE FUNCTION notify_audience_bound(recipients jsonb, after text, n integer) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT max(chunk.id) FROM (
            SELECT audience.id FROM (
                SELECT u.id FROM users AS u WHERE recipients ? 'all' AND u.id > after
                UNION ALL
                SELECT ut.user_id FROM user_topics AS ut
                WHERE ut.topic = recipients ->> 'topic' AND ut.user_id > after
                UNION ALL
                SELECT u.id FROM users AS u
                WHERE u.id = ANY(ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')))
                  AND u.id > after
            ) AS audience
            ORDER BY audience.id
            LIMIT n
        ) AS chunk
    );
END
$$;

-- From sql/migrations/0011_user_bucket.up.sql.
-- From sql/notify/functions/notify_audience.sql.
-- An event's audience after user id `after` (exclusive) up to `upto` (inclusive): everyone,
-- a topic's members or the listed ids that exist, with what the fan-out needs of them.
-- PL/pgSQL, not SQL: Citus plans no SQL function that reads its tables with parameters.
CREATE OR REPLACE FUNCTION notify_audience(recipients jsonb, after text, upto text)
RETURNS TABLE (id text, email text, phone text, timezone text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT u.id, u.email, u.phone, u.timezone
    FROM users AS u
    WHERE recipients ? 'all' AND u.id > after AND u.id <= upto
    UNION ALL
    SELECT u.id, u.email, u.phone, u.timezone
    FROM user_topics AS ut JOIN users AS u ON u.id = ut.user_id
    WHERE ut.topic = recipients ->> 'topic' AND ut.user_id > after AND ut.user_id <= upto
    UNION ALL
    SELECT u.id, u.email, u.phone, u.timezone
    FROM users AS u
    WHERE u.id = ANY(ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')))
      AND u.id > after AND u.id <= upto;
END
$$;

DROP FUNCTION IF EXISTS notify_audience_sql(recipients jsonb, by_bucket boolean);

DROP FUNCTION IF EXISTS seconds_after(t timestamptz, secs float8);

DROP FUNCTION IF EXISTS commutative_writes(setting text);

DROP FUNCTION IF EXISTS take_blocks(seq regclass, rows bigint);

DROP FUNCTION IF EXISTS block_id(blocks bigint[], n bigint, bucket smallint);

DROP FUNCTION IF EXISTS uuid_v7_of(at timestamptz, id bigint);
