-- 0013_web_push: the webpush channel kind, webpush_subscriptions (written by hand, as
-- sql/notify/tables.sql has them); notify_suppression, notify_materialize_chunk,
-- flush_digests, as sql/ defines them now.
-- Drafted by `python -m service.migration_draft`; frozen once released: a later change
-- goes into a new revision (drafted the same way).

-- From sql/notify/tables.sql (by hand).
ALTER TABLE notify_channels
    DROP CONSTRAINT notify_channels_kind_check,
    ADD CONSTRAINT notify_channels_kind_check
        CHECK (kind IN ('email', 'sms', 'push', 'inbox', 'webpush'));

-- Browsers' Web Push subscriptions (RFC 8030): the push service's endpoint URL and the
-- keys a message is encrypted to (RFC 8291: p256dh, auth; base64url). An endpoint is one
-- browser: registered again, for any user, it is that user's now (the newest sign-in
-- wins). Forgotten when its push service answers 404 or 410, and with the user.
CREATE TABLE webpush_subscriptions (
    endpoint   text        PRIMARY KEY,
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    p256dh     text        NOT NULL,
    auth       text        NOT NULL,
    -- The browser's expirationTime, if it gave one (informational: its push service's
    -- 404/410 is what removes a subscription).
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webpush_subscriptions_user_idx ON webpush_subscriptions (user_id, created_at);
CREATE INDEX webpush_subscriptions_updated_at_idx ON webpush_subscriptions (updated_at);

-- From sql/notify/functions/notify_suppression.sql.
-- One of the per-channel rules of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. A single SQL expression, which the planner inlines into the calling
-- statement: no function call per row.
--
-- Why one channel of a notification is not sent ('muted', 'preference', 'no_contact'), or
-- NULL when it is: the user's mute and category switches (not for transactional
-- categories; the switches' precedence is notify_preference_on()), then the contact the
-- channel's kind needs. has_device: the user has a device of the kind (a push device for
-- push, a Web Push subscription for webpush), evaluated only when the rules get that far
-- (a push or webpush channel whose other rules passed).
CREATE OR REPLACE FUNCTION notify_suppression(
    transactional boolean, muted boolean, switches jsonb, defaults jsonb, category text,
    channel text, kind text, email text, phone text, has_device boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT transactional AND coalesce(muted, false) THEN 'muted'
        WHEN NOT notify_preference_on(transactional, switches, defaults, category, channel)
            THEN 'preference'
        WHEN (kind = 'email' AND email IS NULL)
             OR (kind = 'sms' AND phone IS NULL)
             OR (kind IN ('push', 'webpush') AND NOT has_device)
            THEN 'no_contact'
    END
$$;

-- From sql/notify/functions/notify_materialize_chunk.sql.
-- The fan-out of one claimed chunk: its recipients as notifications and outbox rows, in
-- set-based statements that on Citus run on every shard at once (each over its own
-- buckets, joined to its copy of the users: notify_audience_sql()), with ids from blocks
-- taken up front (block_id()): a sequence called per row would pull every row through
-- the coordinator. Per recipient and channel it applies, in this order: the global mute
-- and the category switches (not for transactional categories), a missing contact
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
    audience text;
    topic text;
    ids text[];
    channels text[];
    kinds text[];
    notified bigint;
    due timestamptz;
    commutative text;
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

    commutative := commutative_writes('on');
    topic := ev.recipients ->> 'topic';
    ids := ARRAY(SELECT jsonb_array_elements_text(ev.recipients -> 'user_ids'));
    audience := notify_audience_sql(ev.recipients, true);
    -- Sizes the blocks of ids. $1-$4 are notify_audience_sql()'s parameters throughout.
    EXECUTE 'SELECT count(*) FROM ' || audience INTO chunk_covered
    USING topic, ids, p_lo, p_hi;

    IF et.mode = 'digest' THEN
        -- notify_event() checked that the key is there; a JSON null cannot group.
        IF ev.data ->> et.digest_key IS NULL THEN
            RAISE EXCEPTION 'event data lacks %', et.digest_key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        EXECUTE format($q$
            INSERT INTO digest_items (id, bucket, event_id, user_id, type, digest_key, actor,
                                      data)
            OVERRIDING SYSTEM VALUE
            SELECT block_id($5, row_number() OVER (PARTITION BY b.bucket ORDER BY u.id) - 1,
                            b.bucket),
                   b.bucket, $6, u.id, $7, $8, $9, $10
            FROM %s
            ON CONFLICT (event_id, user_id, bucket) WHERE notification_id IS NULL DO NOTHING
            $q$, audience)
        USING topic, ids, p_lo, p_hi,
              take_blocks(pg_get_serial_sequence('digest_items', 'id')::regclass, chunk_covered),
              ev.id, ev.type, ev.data ->> et.digest_key, ev.data ->> et.digest_actor, ev.data;
    ELSE
        SELECT array_agg(r.channel), array_agg(r.kind) INTO channels, kinds
        FROM notify_type_routes(et.name) AS r;
        -- One notification per recipient, with the channels suppressed for them.
        EXECUTE format($q$
            INSERT INTO notifications (id, bucket, event_id, user_id, type, category,
                                       suppressed)
            OVERRIDING SYSTEM VALUE
            SELECT block_id($5, row_number() OVER (PARTITION BY d.bucket ORDER BY d.id) - 1,
                            d.bucket),
                   d.bucket, $6, d.id, $7, $8,
                   jsonb_object_agg(d.channel, d.verdict) FILTER (WHERE d.verdict IS NOT NULL)
            FROM (
                SELECT a.bucket, a.id, r.channel,
                       notify_suppression($9, p.muted, p.channels, $10, $8, r.channel, r.kind,
                                          a.email, a.phone,
                                          -- Not `CASE r.kind WHEN`: Citus sent that to the workers as text = boolean.
                                          CASE
                                              WHEN r.kind = 'push' THEN EXISTS (
                                                  SELECT 1 FROM push_devices AS pd
                                                  WHERE pd.user_id = a.id)
                                              WHEN r.kind = 'webpush' THEN EXISTS (
                                                  SELECT 1 FROM webpush_subscriptions AS ws
                                                  WHERE ws.user_id = a.id)
                                          END) AS verdict
                FROM (SELECT b.bucket, u.id, u.email, u.phone FROM %s) AS a
                LEFT JOIN preferences AS p ON p.user_id = a.id
                CROSS JOIN unnest($11::text[], $12::text[]) AS r (channel, kind)
            ) AS d
            GROUP BY d.bucket, d.id
            ON CONFLICT (event_id, user_id, bucket) DO NOTHING
            $q$, audience)
        USING topic, ids, p_lo, p_hi,
              take_blocks(pg_get_serial_sequence('notifications', 'id')::regclass,
                          chunk_covered),
              ev.id, ev.type, et.category, cat.transactional, cat.defaults, channels, kinds;
        GET DIAGNOSTICS notified = ROW_COUNT;

        -- Their outbox rows. A notification that existed before (a repeat, which no
        -- chunk makes: the ranges are disjoint) may have its rows already; only then is
        -- each checked for them.
        PERFORM notify_queue(ARRAY[ev.id], p_lo, p_hi, due, notified < chunk_covered,
                             ARRAY[et.name], chunk_covered);
    END IF;

    PERFORM commutative_writes(commutative);
    UPDATE event_chunks AS c SET covered = chunk_covered, updated_at = now()
    WHERE c.event_id = p_event AND c.lo = p_lo;
    -- Last, so the event row is locked only for the end of this transaction.
    UPDATE events AS e SET notified = e.notified + chunk_covered,
                           updated_at = now()
    WHERE e.id = p_event;
    RETURN chunk_covered;
END
$$;

-- From sql/digests/functions/flush_digests.sql.
-- Send the due digests: per digest one notification whose data is {total, actor_count,
-- first_actors (the first show_actors distinct actors, oldest first), last_actors (the
-- latest ones, newest first), others (actor_count minus first_actors), digest_key, last
-- (the newest item's event data)}, and its outbox rows by the instant fan-out's own rules
-- (notify_type_routes(), notify_suppression(), notify_queue()). Due is digest_due_at(),
-- as open_digests shows it. A notification is one per (event, user): the flush makes one
-- `events` row (producer 'digest') per type and n, holding each recipient's n-th digest of
-- that type, so n is 1 unless a recipient has several keys due at once. Items of
-- recipients erased meanwhile are deleted, unsent. Returns the digests sent; commits with
-- the caller's transaction.
--
-- Each step is one statement over a user's own rows (the items, their notifications and
-- outbox rows share user_bucket()), so on Citus each runs on every shard at once; ids
-- come from blocks taken up front (block_id()).
-- 1. Stamp: the items of every due digest get its notification id and this flush's time,
--    in one UPDATE, so what is sent is exactly what was stamped. Items committed after
--    that statement's snapshot are not stamped: they stay open for the next digest.
-- 2. The notifications, from the stamped items (flushed_at = this flush's time, ids from
--    its blocks), then their `events` rows and outbox rows.
-- On Citus its writes do not lock whole shards (commutative_writes()).
-- Race-free with flushes side by side: only a flush changes an open item, and only under
-- the advisory lock taken first, without waiting: a second flush meanwhile returns 0 at
-- once (the next scheduled one takes what became due). One lock rather than one per
-- digest: each lock held takes a lock-table entry, and the table holds
-- max_locks_per_transaction (64) x connections in all.
CREATE OR REPLACE FUNCTION flush_digests() RETURNS integer
-- A flush of a million items sorts and aggregates them in memory.
LANGUAGE plpgsql SET work_mem = '256MB' AS $$
DECLARE
    -- Names this flush's events: a recipient's n-th digest of a type goes under the event
    -- md5(flush:type:n), so no row needs a join to find its event.
    flush text := gen_random_uuid()::text;
    at timestamptz := now();
    blocks bigint[];
    stamped bigint;
    flushed bigint;
    types text[];
    r_types text[];
    channels text[];
    kinds text[];
    made uuid[];
    commutative text;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('mark-notify:flush_digests', 0)) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(t.name) INTO types
    FROM notify_event_types AS t WHERE t.enabled AND t.mode = 'digest';
    IF types IS NULL THEN
        RETURN 0;
    END IF;
    commutative := commutative_writes('on');
    DELETE FROM digest_items AS i
    WHERE i.notification_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = i.user_id);
    -- No more digests than open items: enough blocks for those.
    blocks := take_blocks(pg_get_serial_sequence('notifications', 'id')::regclass,
                          (SELECT count(*) FROM digest_items AS i
                           WHERE i.notification_id IS NULL));

    EXECUTE $q$
        UPDATE digest_items AS i
        SET notification_id = d.notification_id, flushed_at = $2, updated_at = $2
        FROM (
            SELECT o.bucket, o.user_id, o.type, o.digest_key,
                   block_id($1, row_number() OVER (PARTITION BY o.bucket
                                                   ORDER BY o.user_id, o.type, o.digest_key)
                                - 1, o.bucket) AS notification_id
            FROM (
                SELECT i.bucket, i.user_id, i.type, i.digest_key, count(*) AS items,
                       min(i.created_at) AS first_at, max(i.created_at) AS last_at
                FROM digest_items AS i
                WHERE i.notification_id IS NULL AND i.type = ANY($3)
                GROUP BY i.bucket, i.user_id, i.type, i.digest_key
            ) AS o
            JOIN notify_event_types AS t ON t.name = o.type
            JOIN users AS u ON u.id = o.user_id
            WHERE digest_due_at(t.digest_window, t.digest_every_s, t.digest_at,
                                t.digest_quiet_s, t.digest_max_wait_s, t.digest_max_items,
                                coalesce(u.timezone, 'UTC'), o.first_at, o.last_at, o.items)
                  <= $2
        ) AS d
        WHERE i.bucket = d.bucket AND i.user_id = d.user_id AND i.type = d.type
          AND i.digest_key = d.digest_key AND i.notification_id IS NULL
        $q$
    USING blocks, at, types;
    GET DIAGNOSTICS stamped = ROW_COUNT;
    IF stamped = 0 THEN
        PERFORM commutative_writes(commutative);
        RETURN 0;
    END IF;

    SELECT array_agg(r.type), array_agg(r.channel), array_agg(r.kind)
    INTO r_types, channels, kinds
    FROM unnest(types) AS t (name)
    CROSS JOIN LATERAL (SELECT t.name AS type, x.channel, x.kind
                        FROM notify_type_routes(t.name) AS x) AS r;
    -- Per digest: its actors in the order they came (the items' ids grow with time for
    -- one user), the newest item's data, and each route's verdict.
    EXECUTE $q$
        INSERT INTO notifications (id, bucket, event_id, user_id, type, category, suppressed,
                                   data, created_at, updated_at)
        OVERRIDING SYSTEM VALUE
        SELECT d.notification_id, d.bucket, md5($3 || ':' || d.type || ':' || d.n)::uuid,
               d.user_id, d.type, d.category,
               jsonb_object_agg(d.channel, d.verdict) FILTER (WHERE d.verdict IS NOT NULL),
               (array_agg(d.data))[1], $2, $2
        FROM (
            SELECT g.bucket, g.notification_id, g.user_id, g.type, g.n, t.category,
                   r.channel,
                   notify_suppression(c.transactional, p.muted, p.channels, c.defaults,
                                      t.category, r.channel, r.kind, u.email, u.phone,
                                      -- Not `CASE r.kind WHEN`: Citus sent that to the workers as text = boolean.
                                      CASE
                                          WHEN r.kind = 'push' THEN EXISTS (
                                              SELECT 1 FROM push_devices AS pd
                                              WHERE pd.user_id = g.user_id)
                                          WHEN r.kind = 'webpush' THEN EXISTS (
                                              SELECT 1 FROM webpush_subscriptions AS ws
                                              WHERE ws.user_id = g.user_id)
                                      END) AS verdict,
                   jsonb_build_object(
                       'total', g.items,
                       'actor_count', g.actor_count,
                       'first_actors',
                           coalesce(to_jsonb(g.by_first[1:t.digest_show_actors]), '[]'),
                       'last_actors',
                           coalesce(to_jsonb(g.by_last[1:t.digest_show_actors]), '[]'),
                       'others', g.actor_count
                                 - coalesce(cardinality(g.by_first[1:t.digest_show_actors]), 0),
                       'digest_key', g.digest_key,
                       'last', l.data) AS data
            FROM (
                SELECT a.bucket, a.notification_id, a.user_id, a.type, a.digest_key,
                       sum(a.items)::bigint AS items, count(a.actor) AS actor_count,
                       array_agg(a.actor ORDER BY a.first_id)
                           FILTER (WHERE a.actor IS NOT NULL) AS by_first,
                       array_agg(a.actor ORDER BY a.last_id DESC)
                           FILTER (WHERE a.actor IS NOT NULL) AS by_last,
                       max(a.last_id) AS last_id,
                       row_number() OVER (PARTITION BY a.bucket, a.user_id, a.type
                                          ORDER BY a.digest_key) AS n
                FROM (
                    SELECT i.bucket, i.notification_id, i.user_id, i.type, i.digest_key,
                           i.actor, count(*) AS items, min(i.id) AS first_id,
                           max(i.id) AS last_id
                    FROM digest_items AS i
                    WHERE i.flushed_at = $2 AND i.notification_id >= $1
                    GROUP BY i.bucket, i.notification_id, i.user_id, i.type, i.digest_key,
                             i.actor
                ) AS a
                GROUP BY a.bucket, a.notification_id, a.user_id, a.type, a.digest_key
            ) AS g
            JOIN digest_items AS l ON l.id = g.last_id AND l.bucket = g.bucket
            JOIN notify_event_types AS t ON t.name = g.type
            JOIN notify_categories AS c ON c.name = t.category
            LEFT JOIN users AS u ON u.id = g.user_id
            LEFT JOIN preferences AS p ON p.user_id = g.user_id
            LEFT JOIN unnest($4::text[], $5::text[], $6::text[]) AS r (type, channel, kind)
                ON r.type = g.type
        ) AS d
        GROUP BY d.bucket, d.notification_id, d.user_id, d.type, d.n, d.category
        $q$
    USING blocks[1], at, flush, r_types, channels, kinds;
    GET DIAGNOSTICS flushed = ROW_COUNT;

    -- The flush's events: a few rows (a type's n-th digests), on the coordinator.
    WITH logged AS (
        INSERT INTO events (id, producer, idempotency_key, type, recipients, data, status,
                            notified, materialized_at)
        SELECT f.event_id, 'digest', 'flush:' || f.event_id, f.type, '{"digest": true}', '{}',
               'done', f.digests, at
        FROM (SELECT n.event_id, n.type, count(*) AS digests
              FROM notifications AS n
              WHERE n.id >= blocks[1] AND n.created_at = at AND n.data IS NOT NULL
                AND n.type = ANY(types)
              GROUP BY n.event_id, n.type) AS f
        RETURNING id
    )
    SELECT array_agg(id) INTO made FROM logged;

    PERFORM notify_queue(made, '', NULL, at, false, types, flushed);
    PERFORM commutative_writes(commutative);
    RETURN flushed;
END
$$;
