-- Revision 0004: scheduled work (digests, periodic events, retention).
-- Frozen once released: later changes go into a new revision and into sql/schema.sql.

-- == digests ==
-- Items of digest-mode event types, one per event and recipient, gathered under a digest
-- key (e.g. the comment id) until flush_digests() turns the due ones into one
-- notification per recipient and key. notification_id is NULL while the item is open.
-- (event_id, user_id) is unique among open items, which is what makes a repeated fan-out
-- chunk a no-op (a chunk is materialized once anyway, see notify_materialize_chunk()); a
-- unique index over all items would take a new entry at a random place (event ids are
-- random) for every item a flush stamps, twice the cost of the stamping without it.
CREATE TABLE digest_items (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    user_id         text        NOT NULL,
    type            text        NOT NULL,
    digest_key      text        NOT NULL,
    actor           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    notification_id bigint,
    flushed_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX digest_items_open_event_idx ON digest_items (event_id, user_id)
    WHERE notification_id IS NULL;
CREATE INDEX digest_items_open_idx ON digest_items (user_id, type, digest_key, id)
    WHERE notification_id IS NULL;
CREATE INDEX digest_items_flushed_idx ON digest_items (flushed_at)
    WHERE notification_id IS NOT NULL;
CREATE INDEX digest_items_updated_at_idx ON digest_items (updated_at);

-- A digest notification's own data (total, actors, ...); NULL: the event's data.
ALTER TABLE notifications ADD COLUMN data jsonb;

-- Digest-mode event types: their settings, mirrored from the configuration.
ALTER TABLE notify_event_types
    ADD COLUMN mode text NOT NULL DEFAULT 'instant' CHECK (mode IN ('instant', 'digest')),
    ADD COLUMN digest_key text,
    ADD COLUMN digest_actor text,
    ADD COLUMN digest_window text CHECK (digest_window IN ('fixed', 'daily', 'sliding')),
    ADD COLUMN digest_every_s float8,
    ADD COLUMN digest_at time,
    ADD COLUMN digest_quiet_s float8,
    ADD COLUMN digest_max_wait_s float8,
    ADD COLUMN digest_max_items integer,
    ADD COLUMN digest_show_actors integer;

-- The per-channel decision of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. They are single SQL expressions, which the planner inlines into the
-- calling statement: no function call per row.

-- The channels a type is sent on: each of its channels at once, and its escalation
-- channel escalation_after_s later.
CREATE FUNCTION notify_type_routes(p_type text)
RETURNS TABLE (channel text, kind text, escalation boolean, delay_s float8)
LANGUAGE sql STABLE AS $$
    SELECT c.name, c.kind, false, 0::float8
    FROM notify_event_types AS t
    CROSS JOIN unnest(t.channels) AS r(name)
    JOIN notify_channels AS c ON c.name = r.name
    WHERE t.name = p_type
    UNION ALL
    SELECT c.name, c.kind, true, t.escalation_after_s
    FROM notify_event_types AS t
    JOIN notify_channels AS c ON c.name = t.escalation_channel
    WHERE t.name = p_type
$$;

-- Why one channel of a notification is not sent ('muted', 'preference', 'no_contact'), or
-- NULL when it is: the user's mute and category switches (not for transactional
-- categories), then the contact the channel's kind needs. has_device is evaluated only
-- when the rules get that far (a push channel whose other rules passed).
CREATE FUNCTION notify_suppression(
    transactional boolean, muted boolean, switches jsonb, defaults jsonb, category text,
    channel text, kind text, email text, phone text, has_device boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT transactional AND coalesce(muted, false) THEN 'muted'
        WHEN NOT transactional
             AND NOT coalesce((switches -> category ->> channel)::boolean,
                              (defaults ->> channel)::boolean, true)
            THEN 'preference'
        WHEN (kind = 'email' AND email IS NULL)
             OR (kind = 'sms' AND phone IS NULL)
             OR (kind = 'push' AND NOT has_device)
            THEN 'no_contact'
    END
$$;

-- The user's quiet hours of one channel, or NULL when none hold it back (none set, a
-- transactional category, or high priority).
CREATE FUNCTION notify_quiet_hours(
    transactional boolean, priority text, quiet_hours jsonb, channel text
) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN NOT transactional AND priority <> 'high' THEN quiet_hours -> channel END
$$;

-- When a delivery owed at `owed_at` may go: then, or when the quiet hours it falls in end.
-- Most rows have no quiet hours: quiet_hours_end() is called only for those that do.
CREATE FUNCTION notify_send_at(owed_at timestamptz, tz text, quiet jsonb) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN quiet IS NULL THEN owed_at ELSE quiet_hours_end(owed_at, tz, quiet) END
$$;

-- Mirror the configuration's channels, categories and event types (JSON objects keyed by
-- name); entries no longer configured are disabled, never deleted.
CREATE OR REPLACE FUNCTION sync_notify_config(channels jsonb, categories jsonb, event_types jsonb)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO notify_channels AS c (name, kind, enabled)
    SELECT key, value ->> 'kind', true FROM jsonb_each(channels)
    ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, enabled = true, updated_at = now()
    WHERE (c.kind, c.enabled) IS DISTINCT FROM (excluded.kind, true);
    UPDATE notify_channels SET enabled = false, updated_at = now()
    WHERE enabled AND NOT channels ? name;

    INSERT INTO notify_categories AS c (name, transactional, defaults, enabled)
    SELECT key, (value ->> 'transactional')::boolean, coalesce(value -> 'defaults', '{}'), true
    FROM jsonb_each(categories)
    ON CONFLICT (name) DO UPDATE
        SET transactional = excluded.transactional, defaults = excluded.defaults,
            enabled = true, updated_at = now()
    WHERE (c.transactional, c.defaults, c.enabled)
          IS DISTINCT FROM (excluded.transactional, excluded.defaults, true);
    UPDATE notify_categories SET enabled = false, updated_at = now()
    WHERE enabled AND NOT categories ? name;

    INSERT INTO notify_event_types AS t
           (name, category, channels, priority, ttl_s, escalation_channel,
            escalation_after_s, required_data, enabled, mode, digest_key, digest_actor,
            digest_window, digest_every_s, digest_at, digest_quiet_s, digest_max_wait_s,
            digest_max_items, digest_show_actors)
    SELECT key, value ->> 'category',
           ARRAY(SELECT jsonb_array_elements_text(value -> 'channels')),
           value ->> 'priority', (value ->> 'ttl_s')::float8,
           value ->> 'escalation_channel', (value ->> 'escalation_after_s')::float8,
           ARRAY(SELECT jsonb_array_elements_text(value -> 'required_data')), true,
           coalesce(value ->> 'mode', 'instant'), value ->> 'digest_key',
           value ->> 'digest_actor', value ->> 'digest_window',
           (value ->> 'digest_every_s')::float8, (value ->> 'digest_at')::time,
           (value ->> 'digest_quiet_s')::float8, (value ->> 'digest_max_wait_s')::float8,
           (value ->> 'digest_max_items')::integer, (value ->> 'digest_show_actors')::integer
    FROM jsonb_each(event_types)
    ON CONFLICT (name) DO UPDATE
        SET category = excluded.category, channels = excluded.channels,
            priority = excluded.priority, ttl_s = excluded.ttl_s,
            escalation_channel = excluded.escalation_channel,
            escalation_after_s = excluded.escalation_after_s,
            required_data = excluded.required_data, enabled = true, mode = excluded.mode,
            digest_key = excluded.digest_key, digest_actor = excluded.digest_actor,
            digest_window = excluded.digest_window, digest_every_s = excluded.digest_every_s,
            digest_at = excluded.digest_at, digest_quiet_s = excluded.digest_quiet_s,
            digest_max_wait_s = excluded.digest_max_wait_s,
            digest_max_items = excluded.digest_max_items,
            digest_show_actors = excluded.digest_show_actors, updated_at = now()
    WHERE (t.category, t.channels, t.priority, t.ttl_s, t.escalation_channel,
           t.escalation_after_s, t.required_data, t.enabled, t.mode, t.digest_key,
           t.digest_actor, t.digest_window, t.digest_every_s, t.digest_at, t.digest_quiet_s,
           t.digest_max_wait_s, t.digest_max_items, t.digest_show_actors)
          IS DISTINCT FROM (excluded.category, excluded.channels, excluded.priority,
                            excluded.ttl_s, excluded.escalation_channel,
                            excluded.escalation_after_s, excluded.required_data, true,
                            excluded.mode, excluded.digest_key, excluded.digest_actor,
                            excluded.digest_window, excluded.digest_every_s,
                            excluded.digest_at, excluded.digest_quiet_s,
                            excluded.digest_max_wait_s, excluded.digest_max_items,
                            excluded.digest_show_actors);
    UPDATE notify_event_types SET enabled = false, updated_at = now()
    WHERE enabled AND NOT event_types ? name;
$$;

-- The fan-out of one claimed chunk: its recipients as notifications and outbox rows, in one
-- set-based statement. Per recipient and channel it applies, in this order: the global
-- mute and the category switches (not for transactional categories), a missing contact
-- (suppressed, kept on the notification), quiet hours (the row is due when they end; not
-- for transactional categories or high priority), and the escalation delay: the routes
-- and rules flush_digests() applies too (notify_type_routes(), notify_suppression(),
-- notify_quiet_hours(), notify_send_at()). A digest-mode type's recipients get a digest
-- item instead, under the event's data[digest_key], for flush_digests() to send. The
-- chunk's row is locked while it runs, so a chunk is done once; UNIQUE (event_id, user_id)
-- makes a repeat a no-op. Returns the recipients covered (0: already done by another worker).
CREATE OR REPLACE FUNCTION notify_materialize_chunk(p_event uuid, p_lo text, p_hi text)
RETURNS integer
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
    SELECT * INTO STRICT ev FROM events AS e WHERE e.id = p_event;
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
            INSERT INTO digest_items (event_id, user_id, type, digest_key, actor)
            SELECT ev.id, a.id, ev.type, ev.data ->> et.digest_key, ev.data ->> et.digest_actor
            FROM audience AS a
            ORDER BY a.id
            ON CONFLICT (event_id, user_id) WHERE notification_id IS NULL DO NOTHING
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
            INSERT INTO notifications (event_id, user_id, type, category, suppressed)
            SELECT ev.id, user_id, ev.type, et.category,
                   jsonb_object_agg(channel, suppressed) FILTER (WHERE suppressed IS NOT NULL)
            FROM decided
            GROUP BY user_id
            ORDER BY user_id
            ON CONFLICT (event_id, user_id) DO NOTHING
            RETURNING id, user_id
        ),
        queued AS (
            INSERT INTO outbox (kind, consumer, ordering_key, payload, next_attempt_at,
                                notification_id, reason)
            SELECT 'notification', d.channel, d.user_id,
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

-- When an open digest is due, by its type's window (NULL: the type is no longer in digest
-- mode, and its items wait): fixed, every_s after the first item; daily, at the next `at`
-- after the first item in the recipient's time zone; sliding, once no item came for
-- quiet_s, at most max_wait_s after the first. With max_items items it is due at once (at
-- its newest item). One expression, so the planner inlines it.
CREATE FUNCTION digest_due_at(
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
CREATE FUNCTION flush_digests() RETURNS integer
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
    WITH per_actor AS (
        SELECT i.user_id, i.type, i.digest_key, i.actor, count(*) AS items,
               min(i.created_at) AS first_at, max(i.created_at) AS last_at,
               min(i.id) AS first_id, max(i.id) AS last_id
        FROM digest_items AS i
        WHERE i.notification_id IS NULL
        GROUP BY i.user_id, i.type, i.digest_key, i.actor
    ),
    open AS (
        SELECT user_id, type, digest_key, sum(items)::bigint AS items, min(first_at) AS first_at,
               max(last_at) AS last_at, max(last_id) AS last_id, count(actor) AS actor_count,
               array_agg(actor ORDER BY first_id) FILTER (WHERE actor IS NOT NULL) AS by_first,
               array_agg(actor ORDER BY last_id DESC) FILTER (WHERE actor IS NOT NULL)
                   AS by_last
        FROM per_actor
        GROUP BY user_id, type, digest_key
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
                   'last', (SELECT e.data FROM digest_items AS newest
                            JOIN events AS e ON e.id = newest.event_id
                            WHERE newest.id = o.last_id)) AS data
        FROM open AS o
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
        INSERT INTO notifications (id, event_id, user_id, type, category, suppressed, data)
        OVERRIDING SYSTEM VALUE
        SELECT j.notification_id, j.event_id, j.user_id, j.type, j.category, j.suppressed,
               j.data
        FROM judged AS j
        ORDER BY j.notification_id
    ),
    queued AS (
        INSERT INTO outbox (kind, consumer, ordering_key, payload, next_attempt_at,
                            notification_id, reason)
        SELECT 'notification', x.channel, j.user_id,
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
-- == schedules ==
-- Periodic events (docs/scheduler.md). A schedule posts an event through notify_event()
-- at the times its cron expression names in its time zone. Python (croniter) keeps
-- next_run_at; the active backend (scheduler_state) calls fire_due_schedules() every
-- minute, which defers the run as a Procrastinate job that a dispatcher executes (a run
-- may fetch a URL, which SQL cannot). origin 'config': declared in the config file, which
-- the row follows at every start-up; 'cli': made by bin/schedules, left alone by start-ups.
CREATE TABLE schedules (
    name         text        PRIMARY KEY,
    cron         text        NOT NULL,
    timezone     text        NOT NULL DEFAULT 'UTC',
    event_type   text        NOT NULL,
    -- notify_event()'s recipients: {"topic": ...}, {"all": true} or {"user_ids": [...]}.
    audience     jsonb       NOT NULL,
    -- {"kind": "static", "data"}, {"kind": "sql", "query", "shape"}, {"kind": "http", "url",
    -- "headers"}.
    source       jsonb       NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    origin       text        NOT NULL CHECK (origin IN ('config', 'cli')),
    description  text        NOT NULL DEFAULT '',
    -- The next scheduled time (NULL while disabled).
    next_run_at  timestamptz,
    -- The next_run_at whose run has been deferred, and when: a tick defers it once.
    fired_for    timestamptz,
    fired_at     timestamptz,
    -- The last finished run: its scheduled time, outcome and error.
    last_run_at  timestamptz,
    last_outcome text        CHECK (last_outcome IN ('sent', 'duplicate', 'failed')),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled;
CREATE INDEX schedules_updated_at_idx ON schedules (updated_at);

-- One row per run of a schedule at one scheduled time (a manual run: the second it was
-- asked for). Its event's idempotency key is 'schedule:<name>:<scheduled_for, ISO, UTC>',
-- so a run made twice sends nothing twice. Runs outlive their schedule, as history.
CREATE TABLE schedule_runs (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule      text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    fired_by      text        NOT NULL CHECK (fired_by IN ('pg_cron', 'procrastinate', 'manual')),
    outcome       text        NOT NULL DEFAULT 'running'
                              CHECK (outcome IN ('running', 'sent', 'duplicate', 'failed')),
    -- Attempts at the data source (a failing one is retried with backoff, a few times).
    attempts      integer     NOT NULL DEFAULT 0,
    error         text,
    event_id      uuid,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schedule, scheduled_for)
);
CREATE INDEX schedule_runs_updated_at_idx ON schedule_runs (updated_at);

-- The backend that runs scheduled work (pg_cron or the dispatchers' Procrastinate
-- periodic tasks), as the last start-up or `bin/schedules sync` chose it; one row. Only
-- that backend's ticks fire schedules and flush digests, so exactly one is active even
-- while dispatchers of two minds run side by side.
CREATE TABLE scheduler_state (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    backend    text        NOT NULL CHECK (backend IN ('pg_cron', 'procrastinate')),
    detail     text        NOT NULL,
    chosen_by  text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION scheduler_active(p_backend text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM scheduler_state AS s WHERE s.backend = p_backend)
$$;

-- Mirror the config file's schedules (a JSON object keyed by name, each with its
-- definition and the next_run_at Python computed for it): rows the file declares are
-- added or made to follow it (a CLI-made row of the same name becomes the file's), and
-- config rows the file no longer declares are removed; CLI-made rows are left alone.
-- A row whose timing (cron, time zone, enabled) is unchanged keeps its next_run_at, so a
-- run missed while nothing ran is still made. Returns what changed.
CREATE FUNCTION sync_config_schedules(declared jsonb)
RETURNS TABLE (name text, change text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH wanted AS (
        SELECT key AS name, value ->> 'cron' AS cron, value ->> 'timezone' AS timezone,
               value ->> 'event_type' AS event_type, value -> 'audience' AS audience,
               value -> 'source' AS source, (value ->> 'enabled')::boolean AS enabled,
               value ->> 'description' AS description,
               (value ->> 'next_run_at')::timestamptz AS next_run_at
        FROM jsonb_each(declared)
    ),
    before AS (
        SELECT s.name, s.origin FROM schedules AS s WHERE s.name IN (SELECT w.name FROM wanted AS w)
    ),
    upserted AS (
        INSERT INTO schedules AS s (name, cron, timezone, event_type, audience, source,
                                    enabled, origin, description, next_run_at)
        SELECT w.name, w.cron, w.timezone, w.event_type, w.audience, w.source, w.enabled,
               'config', w.description, CASE WHEN w.enabled THEN w.next_run_at END
        FROM wanted AS w
        ORDER BY w.name
        ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
            SET cron = excluded.cron, timezone = excluded.timezone,
                event_type = excluded.event_type, audience = excluded.audience,
                source = excluded.source, enabled = excluded.enabled, origin = 'config',
                description = excluded.description,
                next_run_at = CASE
                    WHEN (s.cron, s.timezone, s.enabled)
                         IS NOT DISTINCT FROM (excluded.cron, excluded.timezone, excluded.enabled)
                         AND (s.next_run_at IS NOT NULL OR NOT s.enabled)
                        THEN s.next_run_at
                    ELSE excluded.next_run_at END,
                fired_for = CASE
                    WHEN (s.cron, s.timezone, s.enabled)
                         IS NOT DISTINCT FROM (excluded.cron, excluded.timezone, excluded.enabled)
                        THEN s.fired_for END,
                updated_at = now()
            WHERE (s.cron, s.timezone, s.event_type, s.audience, s.source, s.enabled,
                   s.origin, s.description)
                  IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.event_type,
                                    excluded.audience, excluded.source, excluded.enabled,
                                    'config', excluded.description)
               OR (s.enabled AND s.next_run_at IS NULL)
        RETURNING s.name
    ),
    removed AS (
        DELETE FROM schedules AS s
        WHERE s.origin = 'config' AND NOT declared ? s.name
        RETURNING s.name
    )
    SELECT u.name, CASE WHEN b.name IS NULL THEN 'added'
                        WHEN b.origin = 'cli' THEN 'taken over'
                        ELSE 'changed' END
    FROM upserted AS u LEFT JOIN before AS b ON b.name = u.name
    UNION ALL
    SELECT r.name, 'removed' FROM removed AS r
    ORDER BY 1;
END
$$;

-- Fire the due schedules (or only `only_schedule`) if `via` is the active backend: defer
-- each one's run as a `schedule.run` Procrastinate job, once per scheduled time. The
-- rows are claimed FOR UPDATE SKIP LOCKED and marked (fired_for), so concurrent ticks of
-- several dispatchers, or of pg_cron and a lagging dispatcher, defer a run once, and the
-- queueing lock keeps one job waiting per schedule. A run deferred `stale` ago that never
-- finished (its worker died) is deferred again: no Procrastinate `lock`, which a job left
-- 'doing' by a dead worker would hold for ever; the run's row (schedule_runs) and its
-- event's idempotency key keep it single. Returns the runs deferred.
CREATE FUNCTION fire_due_schedules(
    via text, only_schedule text DEFAULT NULL, stale interval DEFAULT '15 minutes'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    fired integer;
BEGIN
    IF NOT scheduler_active(via) THEN
        RETURN 0;
    END IF;
    WITH due AS (
        SELECT s.name FROM schedules AS s
        WHERE s.enabled AND s.next_run_at <= now()
          AND (only_schedule IS NULL OR s.name = only_schedule)
          AND (s.fired_for IS DISTINCT FROM s.next_run_at OR s.fired_at < now() - stale)
        ORDER BY s.name
        FOR UPDATE SKIP LOCKED
    ),
    marked AS (
        UPDATE schedules AS s SET fired_for = s.next_run_at, fired_at = now(), updated_at = now()
        FROM due AS d WHERE s.name = d.name
        RETURNING s.name, s.next_run_at
    ),
    deferred AS (
        INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args)
        SELECT 'schedule', 'schedule.run', 'schedule:' || m.name,
               jsonb_build_object('name', m.name, 'scheduled_for', m.next_run_at,
                                  'fired_by', via)
        FROM marked AS m
        ORDER BY m.name
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO fired FROM deferred;
    RETURN fired;
END
$$;

-- The end of a run of `p_schedule` for `p_scheduled_for`: the run's outcome (unless
-- p_outcome is NULL: the run had already been made), and, if the scheduler fired it, the
-- schedule moves on to `p_next` (croniter's next time after now, from Python). A manual
-- run, or one whose schedule was changed meanwhile, leaves next_run_at alone.
CREATE FUNCTION finish_schedule_run(
    p_schedule text, p_scheduled_for timestamptz, p_outcome text, p_error text,
    p_attempts integer, p_event uuid, p_next timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_outcome IS NOT NULL THEN
        UPDATE schedule_runs AS r
        SET outcome = p_outcome, error = p_error, attempts = p_attempts, event_id = p_event,
            finished_at = now(), updated_at = now()
        WHERE r.schedule = p_schedule AND r.scheduled_for = p_scheduled_for;
    END IF;
    UPDATE schedules AS s
    SET last_run_at = CASE WHEN p_outcome IS NULL THEN s.last_run_at ELSE p_scheduled_for END,
        last_outcome = coalesce(p_outcome, s.last_outcome),
        last_error = CASE WHEN p_outcome IS NULL THEN s.last_error ELSE p_error END,
        next_run_at = CASE WHEN s.fired_for = p_scheduled_for AND s.enabled
                           THEN p_next ELSE s.next_run_at END,
        fired_for = CASE WHEN s.fired_for = p_scheduled_for THEN NULL ELSE s.fired_for END,
        updated_at = now()
    WHERE s.name = p_schedule;
END
$$;

-- == retention ==
-- Delivered and suppressed rows, per consumer, for the prune: it finds each consumer's
-- oldest finished rows here without stepping over the rows it keeps. Through
-- outbox_updated_at_idx every batch would walk past all old pending rows (those of a
-- disabled consumer wait indefinitely), dead rows and inbox rows, which are kept longer
-- than the rows around them; inbox rows alone are one per notification for 90 days.
CREATE INDEX outbox_finished_idx ON outbox (consumer, updated_at)
    WHERE status IN ('delivered', 'suppressed');

-- One bounded batch of retention, in the caller's transaction: up to batch_size rows of
-- each kind past its age, oldest first. Kinds: 'delivered' (delivered and suppressed
-- outbox rows; those of inbox channels after `inbox`), 'dead' (dead outbox rows),
-- 'attempts' (the attempts of those rows; and, once no such row is left, attempts older
-- than `attempts` of delivered and suppressed rows that stay), 'digest_items' (flushed).
-- Pending rows and their attempts are never touched. Rows are taken FOR UPDATE SKIP
-- LOCKED, so the prune neither waits for nor blocks a dispatcher, bin/redeliver or the
-- digest flush: a locked row is left for a later run.
-- Each kind returns how far it got (`reached`, a time); a loop passes it back as that
-- kind's `*_from`, so the next batch starts there instead of stepping again over the
-- index entries of every row pruned so far (they stay until VACUUM). full_batch: the
-- kind filled its batch, so more may be waiting. The caller's transaction commits
-- asynchronously (synchronous_commit off): a batch lost in a crash is pruned again by the
-- next run, and the intake's commits do not wait behind a flush of the prune's WAL
-- (docs/performance.md: it is most of what a prune adds to the intake's p99).
CREATE FUNCTION prune_retention_batch(
    delivered interval, inbox interval, dead interval, attempts interval,
    digest_items interval, batch_size integer,
    delivered_from timestamptz DEFAULT '-infinity', dead_from timestamptz DEFAULT '-infinity',
    attempts_from timestamptz DEFAULT '-infinity',
    digest_items_from timestamptz DEFAULT '-infinity'
) RETURNS TABLE (kind text, pruned bigint, full_batch boolean, reached timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    -- Cutoffs rather than ages in the queries: `attempts` is also an outbox column.
    delivered_before timestamptz := now() - delivered;
    inbox_before timestamptz := now() - inbox;
    dead_before timestamptz := now() - dead;
    attempts_before timestamptz := now() - attempts;
    digest_before timestamptz := now() - digest_items;
    finished bigint;
    finished_attempts bigint;
    finished_reached timestamptz;
    buried bigint;
    buried_attempts bigint;
    buried_reached timestamptz;
    lone_attempts bigint := 0;
    lone_reached timestamptz := attempts_from;
    items bigint;
    items_reached timestamptz;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    -- The consumers with finished rows, by a loose scan of outbox_finished_idx from its
    -- young end (the old end is where pruned rows leave dead index entries); then each
    -- one's oldest finished rows past its age, and the oldest of those overall. The lock
    -- re-checks them.
    WITH RECURSIVE consumers AS (
        SELECT max(o.consumer) AS consumer FROM outbox AS o
        WHERE o.status IN ('delivered', 'suppressed')
        UNION ALL
        SELECT (SELECT max(o.consumer) FROM outbox AS o
                WHERE o.status IN ('delivered', 'suppressed') AND o.consumer < c.consumer)
        FROM consumers AS c
        WHERE c.consumer IS NOT NULL
    ),
    cutoffs AS (
        SELECT c.consumer,
               CASE WHEN ch.kind = 'inbox' THEN inbox_before ELSE delivered_before END AS before
        FROM consumers AS c
        LEFT JOIN notify_channels AS ch ON ch.name = c.consumer
        WHERE c.consumer IS NOT NULL
    ),
    candidates AS MATERIALIZED (
        SELECT old.id, old.updated_at, cu.before
        FROM cutoffs AS cu
        CROSS JOIN LATERAL (
            SELECT o.id, o.updated_at FROM outbox AS o
            WHERE o.consumer = cu.consumer AND o.status IN ('delivered', 'suppressed')
              AND o.updated_at >= delivered_from AND o.updated_at < cu.before
            ORDER BY o.updated_at
            LIMIT batch_size
        ) AS old
        ORDER BY old.updated_at
        LIMIT batch_size
    ),
    doomed AS (
        SELECT o.id FROM outbox AS o
        JOIN candidates AS c ON c.id = o.id
        WHERE o.status IN ('delivered', 'suppressed') AND o.updated_at < c.before
        FOR UPDATE OF o SKIP LOCKED
    ),
    gone AS (
        DELETE FROM outbox AS o USING doomed AS d WHERE o.id = d.id RETURNING o.id
    ),
    gone_attempts AS (
        DELETE FROM delivery_attempts AS a USING gone AS g WHERE a.outbox_id = g.id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts),
           (SELECT coalesce(max(c.updated_at), delivered_from) FROM candidates AS c)
    INTO finished, finished_attempts, finished_reached;

    -- Dead rows the same way, through outbox_dead_idx.
    WITH RECURSIVE consumers AS (
        SELECT max(o.consumer) AS consumer FROM outbox AS o WHERE o.status = 'dead'
        UNION ALL
        SELECT (SELECT max(o.consumer) FROM outbox AS o
                WHERE o.status = 'dead' AND o.consumer < c.consumer)
        FROM consumers AS c
        WHERE c.consumer IS NOT NULL
    ),
    candidates AS MATERIALIZED (
        SELECT old.id, old.updated_at
        FROM consumers AS c
        CROSS JOIN LATERAL (
            SELECT o.id, o.updated_at FROM outbox AS o
            WHERE o.consumer = c.consumer AND o.status = 'dead'
              AND o.updated_at >= dead_from AND o.updated_at < dead_before
            ORDER BY o.updated_at
            LIMIT batch_size
        ) AS old
        ORDER BY old.updated_at
        LIMIT batch_size
    ),
    doomed AS (
        SELECT o.id FROM outbox AS o
        WHERE o.id IN (SELECT c.id FROM candidates AS c)
          AND o.status = 'dead' AND o.updated_at < dead_before
        FOR UPDATE SKIP LOCKED
    ),
    gone AS (
        DELETE FROM outbox AS o USING doomed AS d WHERE o.id = d.id RETURNING o.id
    ),
    gone_attempts AS (
        DELETE FROM delivery_attempts AS a USING gone AS g WHERE a.outbox_id = g.id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts),
           (SELECT coalesce(max(c.updated_at), dead_from) FROM candidates AS c)
    INTO buried, buried_attempts, buried_reached;

    -- Old attempts of rows that stay (inbox rows), once the rows past their age are gone
    -- (their attempts go with them). The row is share-locked so that bin/redeliver cannot
    -- make it pending meanwhile. Old attempts of pending and dead rows are stepped over.
    IF finished < batch_size AND buried < batch_size THEN
        WITH candidates AS MATERIALIZED (
            SELECT a.outbox_id, a.attempt, a.updated_at FROM delivery_attempts AS a
            JOIN outbox AS o ON o.id = a.outbox_id
            WHERE a.updated_at >= attempts_from AND a.updated_at < attempts_before
              AND o.status IN ('delivered', 'suppressed')
            ORDER BY a.updated_at
            LIMIT batch_size
            FOR UPDATE OF a SKIP LOCKED
            FOR SHARE OF o SKIP LOCKED
        ),
        gone AS (
            DELETE FROM delivery_attempts AS a USING candidates AS c
            WHERE a.outbox_id = c.outbox_id AND a.attempt = c.attempt
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone),
               (SELECT coalesce(max(c.updated_at), attempts_from) FROM candidates AS c)
        INTO lone_attempts, lone_reached;
    END IF;

    WITH candidates AS MATERIALIZED (
        SELECT d.id, d.flushed_at FROM digest_items AS d
        WHERE d.notification_id IS NOT NULL
          AND d.flushed_at >= digest_items_from AND d.flushed_at < digest_before
        ORDER BY d.flushed_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ),
    gone AS (
        DELETE FROM digest_items AS d USING candidates AS c WHERE d.id = c.id RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone),
           (SELECT coalesce(max(c.flushed_at), digest_items_from) FROM candidates AS c)
    INTO items, items_reached;

    RETURN QUERY VALUES
        ('delivered'::text, finished, finished >= batch_size, finished_reached),
        ('dead', buried, buried >= batch_size, buried_reached),
        ('attempts', finished_attempts + buried_attempts + lone_attempts,
         lone_attempts >= batch_size, lone_reached),
        ('digest_items', items, items >= batch_size, items_reached);
END
$$;

-- Everything past its age, batch after batch with a COMMIT after each, so no lock or
-- snapshot is held for long however large the backlog; `pause` between batches leaves
-- the database to the intake. Totals go to the server log. It commits, so it must be
-- CALLed on its own, outside a transaction block; pg_cron does that:
--   SELECT cron.schedule('mark-notify-retention', '17 3 * * *',
--       $$CALL prune_retention(delivered => '7 days', inbox => '90 days', dead => '30 days',
--                              attempts => '30 days', digest_items => '7 days',
--                              batch_size => 250, pause => '10 milliseconds')$$);
-- The defaults are those of [retention] (service/config_schedule.py); the Procrastinate
-- backend runs the same loop from Python (service/schedule/retention.py).
CREATE PROCEDURE prune_retention(
    delivered interval DEFAULT '7 days', inbox interval DEFAULT '90 days',
    dead interval DEFAULT '30 days', attempts interval DEFAULT '30 days',
    digest_items interval DEFAULT '7 days', batch_size integer DEFAULT 250,
    pause interval DEFAULT '10 milliseconds'
)
LANGUAGE plpgsql AS $$
DECLARE
    more boolean := true;
    batches integer := 0;
    totals jsonb := '{}';
    progress jsonb := '{}';
    b record;
BEGIN
    WHILE more LOOP
        more := false;
        FOR b IN
            SELECT * FROM prune_retention_batch(
                delivered, inbox, dead, attempts, digest_items, batch_size,
                coalesce((progress ->> 'delivered')::timestamptz, '-infinity'),
                coalesce((progress ->> 'dead')::timestamptz, '-infinity'),
                coalesce((progress ->> 'attempts')::timestamptz, '-infinity'),
                coalesce((progress ->> 'digest_items')::timestamptz, '-infinity'))
        LOOP
            more := more OR b.full_batch;
            totals := totals || jsonb_build_object(
                b.kind, coalesce((totals ->> b.kind)::bigint, 0) + b.pruned);
            progress := progress || jsonb_build_object(b.kind, b.reached);
        END LOOP;
        batches := batches + 1;
        COMMIT;
        IF more AND pause > interval '0' THEN
            PERFORM pg_sleep_for(pause);
        END IF;
    END LOOP;
    RAISE LOG 'prune_retention: pruned % in % batches', totals, batches;
END
$$;
