-- 0012_fanout_pushdown: uuid_v7_of, block_id, take_blocks, commutative_writes, seconds_after, notify_audience_sql, notify_audience, notify_audience_bound, notify_queue, notify_materialize_chunk, digest_due_at, flush_digests, as sql/ defines them now.
-- Drafted by `python -m service.migration_draft`; frozen once released: a later change
-- goes into a new revision (drafted the same way).

-- From sql/core/functions/uuid_v7_of.sql.
-- uuid_v7()'s layout made from a time and a unique bigint instead of random bits, so that
-- a statement on the Citus workers (which may call no volatile function) names its rows:
-- the first 48 bits the time in milliseconds, then the version (7), the id's top bit, the
-- variant and its 62 low bits. Distinct ids give distinct uuids. Not STRICT, so that the
-- planner inlines it (a strict SQL function whose body is not strict runs once per row).
CREATE OR REPLACE FUNCTION uuid_v7_of(at timestamptz, id bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send((extract(epoch FROM at) * 1000)::bigint) FROM 3)
        || substring(int8send(28672 | (id >> 62)) FROM 7)
        || int8send((id & 4611686018427387903) | (-9223372036854775807 - 1)),
        'hex')::uuid
$$;

-- From sql/core/functions/block_id.sql.
-- The id of the n-th row (from 0) of one bucket in a statement that writes many buckets'
-- rows at once on their own nodes (the fan-out pushed down to the Citus workers, where no
-- sequence may be called). The id sequences of outbox, notifications and digest_items
-- step by 65,536: one nextval() is a block of ids nobody else is given, and a row written
-- alone takes a whole block. A bulk statement takes blocks up front
-- (take_blocks()) and spends each on 1,024 rows of every bucket: block + n % 1024 * 64 +
-- bucket, so two buckets never meet and each worker numbers its own rows. Not STRICT, so
-- that the planner inlines it (see uuid_v7_of()).
CREATE OR REPLACE FUNCTION block_id(blocks bigint[], n bigint, bucket smallint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT blocks[1 + n / 1024] + n % 1024 * 64 + bucket
$$;

-- From sql/core/functions/take_blocks.sql.
-- Enough blocks of `seq`'s ids for `rows` rows of one statement, however they fall into
-- buckets (block_id()): one block per 1,024 rows. Called on the coordinator, once per
-- statement, never per row.
CREATE OR REPLACE FUNCTION take_blocks(seq regclass, rows bigint) RETURNS bigint[]
LANGUAGE sql VOLATILE AS $$
    SELECT ARRAY(SELECT nextval(seq) FROM generate_series(1, greatest(1, (rows + 1023) / 1024)))
$$;

-- From sql/core/functions/commutative_writes.sql.
-- Citus locks every shard of a multi-shard upsert or update against every other such
-- statement until commit, unless citus.all_modifications_commutative is on. The fan-out
-- and the digest flush write new rows (the flush stamps items under its own lock), so
-- they turn it on for their own statements and chunks and flushes run side by side;
-- PostgreSQL still locks each row. Sets it to `setting` for the rest of the transaction
-- and returns what it was, for the caller to put back; where Citus is not loaded there is
-- no such setting (NULL), and a plain role may not make one, so nothing is set.
CREATE OR REPLACE FUNCTION commutative_writes(setting text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    before text := current_setting('citus.all_modifications_commutative', true);
BEGIN
    IF before IS NOT NULL AND setting IS NOT NULL THEN
        PERFORM set_config('citus.all_modifications_commutative', setting, true);
    END IF;
    RETURN before;
END
$$;

-- From sql/core/functions/seconds_after.sql.
-- `secs` seconds after `t`. A whole number of seconds takes no time zone, so this is
-- IMMUTABLE where timestamptz + interval is STABLE (a month or a day would depend on the
-- zone): Citus refuses a STABLE function of a column in an UPDATE it sends to the workers.
-- Not inlined (its body is STABLE), so the planner sees it as declared.
CREATE OR REPLACE FUNCTION seconds_after(t timestamptz, secs float8) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT t + make_interval(secs => secs)
$$;

-- From sql/notify/functions/notify_audience_sql.sql.
-- Who an event's recipients are, the one place of that rule: the FROM and WHERE of a query
-- over the audience as `u` (users) after user id $3 (exclusive) up to $4 (inclusive; NULL:
-- no bound), for recipients {"all": true}, {"topic": $1} or {"user_ids": $2}; anything
-- else has nobody. Text for EXECUTE, so each audience is read from its own index and
-- planned with its values (Citus plans nothing else it cannot see).
-- by_bucket: also `b`, the user's row of `buckets`, so that on Citus the statement runs
-- on every shard at once, each over its own buckets' users (users is a reference table,
-- copied to every node); the fan-out writes that way. Without it, one read in id order.
CREATE OR REPLACE FUNCTION notify_audience_sql(recipients jsonb, by_bucket boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN recipients ? 'topic' THEN
            'user_topics AS ut JOIN users AS u ON u.id = ut.user_id'
            || CASE WHEN by_bucket
                    THEN ' JOIN buckets AS b ON b.bucket = user_bucket(ut.user_id)' ELSE '' END
            || ' WHERE ut.topic = $1 AND ut.user_id > $3'
            || ' AND ($4::text IS NULL OR ut.user_id <= $4)'
        ELSE
            'users AS u'
            || CASE WHEN by_bucket
                    THEN ' JOIN buckets AS b ON b.bucket = user_bucket(u.id)' ELSE '' END
            || CASE WHEN recipients ? 'all' THEN ' WHERE true'
                    WHEN recipients ? 'user_ids' THEN ' WHERE u.id = ANY($2)'
                    ELSE ' WHERE false' END
            || ' AND u.id > $3 AND ($4::text IS NULL OR u.id <= $4)'
    END
$$;

-- From sql/notify/functions/notify_audience.sql.
-- An event's audience after user id `after` (exclusive) up to `upto` (inclusive; NULL: no
-- bound), with what the fan-out needs of them (notify_audience_sql() says who).
CREATE OR REPLACE FUNCTION notify_audience(recipients jsonb, after text, upto text)
RETURNS TABLE (id text, email text, phone text, timezone text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT u.id, u.email, u.phone, u.timezone FROM '
        || notify_audience_sql(recipients, false)
    USING recipients ->> 'topic',
          ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')), after, upto;
END
$$;

-- From sql/notify/functions/notify_audience_bound.sql.
-- The id of the n-th recipient after `after` (or of the last one, if fewer remain); NULL
-- when none remains. A chunk of the fan-out ends there. Read in id order through the
-- audience's index (notify_audience_sql() without buckets: on Citus a read of the
-- coordinator's copy of users, where a per-shard read would walk every user).
CREATE OR REPLACE FUNCTION notify_audience_bound(recipients jsonb, after text, n integer) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bound text;
BEGIN
    EXECUTE 'SELECT max(chunk.id) FROM (SELECT u.id FROM '
            || notify_audience_sql(recipients, false)
            || ' ORDER BY u.id LIMIT $5) AS chunk'
    INTO bound
    USING recipients ->> 'topic',
          ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')), after,
          NULL::text, n;
    RETURN bound;
END
$$;

-- From sql/notify/functions/notify_queue.sql.
-- The outbox rows of notifications just made, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both queue by
-- the same rules: one row per route of the notification's type (notify_type_routes())
-- that its `suppressed` does not name, owed at `due` plus the route's delay and held by
-- the recipient's quiet hours (notify_quiet_hours(), notify_send_at()). The notifications
-- are those of `events` with user ids after `after` up to `upto` (NULL: no bound); `guard`
-- skips any that has rows already (only a repeat can). `rows` bounds how many there are,
-- to take the ids' blocks (block_id()). One statement that Citus runs on every shard at
-- once, rows named by their ids (uuid_v7_of(): uuid_v7() is volatile). Wakes the
-- dispatchers of the routes' channels; returns the rows queued.
CREATE OR REPLACE FUNCTION notify_queue(
    events uuid[], after text, upto text, due timestamptz, guard boolean, types text[],
    rows bigint
) RETURNS bigint
-- Its callers have turned commutative_writes() on.
LANGUAGE plpgsql AS $$
DECLARE
    r_types text[];
    channels text[];
    escalations boolean[];
    delays float8[];
    transactional boolean[];
    priorities text[];
    queued bigint;
BEGIN
    SELECT array_agg(t.name), array_agg(r.channel), array_agg(r.escalation),
           array_agg(r.delay_s), array_agg(c.transactional), array_agg(t.priority)
    INTO r_types, channels, escalations, delays, transactional, priorities
    FROM notify_event_types AS t
    JOIN notify_categories AS c ON c.name = t.category
    CROSS JOIN LATERAL notify_type_routes(t.name) AS r
    WHERE t.name = ANY(types);
    IF r_types IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE $q$
        INSERT INTO outbox (id, bucket, event_id, kind, consumer, ordering_key, payload,
                            next_attempt_at, notification_id, reason)
        SELECT d.row_id, d.bucket, uuid_v7_of(now(), d.row_id), 'notification', d.channel,
               d.user_id,
               CASE WHEN d.escalation THEN '{"escalation": true}'::jsonb ELSE '{}'::jsonb END,
               d.until, d.id, CASE WHEN d.until > d.owed_at THEN 'quiet_hours' END
        FROM (
            SELECT block_id($1, row_number() OVER (PARTITION BY n.bucket
                                                   ORDER BY n.id, r.channel, r.escalation)
                                - 1, n.bucket) AS row_id,
                   n.bucket, n.id, n.user_id, r.channel, r.escalation,
                   $5 + make_interval(secs => r.delay_s) AS owed_at,
                   notify_send_at($5 + make_interval(secs => r.delay_s),
                                  coalesce(u.timezone, 'UTC'),
                                  notify_quiet_hours(r.transactional, r.priority, p.quiet_hours,
                                                     r.channel)) AS until
            FROM notifications AS n
            JOIN unnest($7::text[], $8::text[], $9::boolean[], $10::float8[], $11::boolean[],
                        $12::text[])
                AS r (type, channel, escalation, delay_s, transactional, priority)
                ON r.type = n.type
            LEFT JOIN users AS u ON u.id = n.user_id
            LEFT JOIN preferences AS p ON p.user_id = n.user_id
            WHERE n.event_id = ANY($2) AND n.user_id > $3
              AND ($4::text IS NULL OR n.user_id <= $4)
              AND NOT coalesce(n.suppressed ? r.channel, false)
              AND NOT ($6 AND EXISTS (SELECT 1 FROM outbox AS o
                                      WHERE o.notification_id = n.id AND o.bucket = n.bucket))
        ) AS d
        $q$
    USING take_blocks(pg_get_serial_sequence('outbox', 'id')::regclass,
                      rows * (SELECT max(x.n) FROM (SELECT count(*) AS n FROM unnest(r_types) AS t
                                                    GROUP BY t) AS x)),
          events, after, upto, due, guard, r_types, channels, escalations, delays,
          transactional, priorities;
    GET DIAGNOSTICS queued = ROW_COUNT;
    -- Every channel of the routes: the rows just written are on the workers, and a
    -- dispatcher woken for a channel with nothing due claims nothing.
    IF queued > 0 THEN
        PERFORM wake_dispatchers(ARRAY(SELECT DISTINCT unnest(channels)),
                                 'dispatch', 'dispatcher.wake');
    END IF;
    RETURN queued;
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
                                          EXISTS (SELECT 1 FROM push_devices AS pd
                                                  WHERE pd.user_id = a.id)) AS verdict
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

-- From sql/digests/functions/digest_due_at.sql.
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
        -- CASE WHEN, not CASE win WHEN: Citus sends the inlined form of the latter to
        -- its workers as a comparison of text with boolean. seconds_after(): see there.
        CASE
            WHEN win = 'fixed' THEN seconds_after(first_at, every_s)
            WHEN win = 'sliding' THEN least(seconds_after(last_at, quiet_s),
                                            seconds_after(first_at, max_wait_s))
            WHEN win = 'daily' THEN ((first_at AT TIME ZONE tz)::date
                                     + CASE WHEN (first_at AT TIME ZONE tz)::time < at
                                            THEN 0 ELSE 1 END
                                     + at) AT TIME ZONE tz
        END,
        -- least() skips NULLs: this counts only when the digest is full.
        CASE WHEN items >= max_items THEN last_at END)
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
                                      EXISTS (SELECT 1 FROM push_devices AS pd
                                              WHERE pd.user_id = g.user_id)) AS verdict,
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

-- Ids in blocks (block_id()): each nextval() of these sequences is a block of 65,536.
-- Every block is past the ids given so far.
ALTER TABLE outbox ALTER COLUMN id SET INCREMENT BY 65536;
ALTER TABLE notifications ALTER COLUMN id SET INCREMENT BY 65536;
ALTER TABLE digest_items ALTER COLUMN id SET INCREMENT BY 65536;

CREATE INDEX users_bucket_idx ON users (user_bucket(id), id);
CREATE INDEX user_topics_bucket_idx ON user_topics (topic, user_bucket(user_id), user_id);

CREATE TABLE buckets (
    bucket smallint PRIMARY KEY
);
INSERT INTO buckets (bucket) SELECT generate_series(0, bucket_count() - 1);
-- Its statistics: a plan over it starts from its few rows.
ANALYZE buckets;

-- The event's data on each digest item (the flush reads it on the workers): open items
-- get it now.
ALTER TABLE digest_items ADD COLUMN data jsonb;
UPDATE digest_items AS i SET data = e.data
FROM events AS e
WHERE e.id = i.event_id AND i.notification_id IS NULL;
