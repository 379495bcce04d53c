-- 0012_fanout_pushdown: uuid_v7_of, block_id, take_blocks, notify_audience_sql, notify_audience, notify_audience_bound, notify_materialize_chunk, as sql/ defines them now.
-- Drafted by `python -m service.migration_draft`; frozen once released: a later change
-- goes into a new revision (drafted the same way).

-- From sql/core/functions/uuid_v7_of.sql.
-- uuid_v7()'s layout made from a time and a unique bigint instead of random bits, so that
-- a statement on the Citus workers (which may call no volatile function) names its rows:
-- the first 48 bits the time in milliseconds, then the version (7), the id's top bit, the
-- variant and its 62 low bits. Distinct ids give distinct uuids.
CREATE OR REPLACE FUNCTION uuid_v7_of(at timestamptz, id bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
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
-- bucket, so two buckets never meet and each worker numbers its own rows.
CREATE OR REPLACE FUNCTION block_id(blocks bigint[], n bigint, bucket smallint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
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
-- The chunk's sorts and aggregates fit in memory instead of spilling to disk. On Citus an
-- upsert on many shards otherwise locks each shard against every other such statement
-- (a flush, the next chunk) until commit; these rows are new, and PostgreSQL still locks
-- each row, so the chunks and flushes run side by side. Elsewhere the setting is inert.
LANGUAGE plpgsql SET work_mem = '64MB' SET citus.all_modifications_commutative = on AS $$
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
    escalations boolean[];
    delays float8[];
    notified bigint;
    queued bigint;
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
            INSERT INTO digest_items (id, bucket, event_id, user_id, type, digest_key, actor)
            OVERRIDING SYSTEM VALUE
            SELECT block_id($5, row_number() OVER (PARTITION BY b.bucket ORDER BY u.id) - 1,
                            b.bucket),
                   b.bucket, $6, u.id, $7, $8, $9
            FROM %s
            ON CONFLICT (event_id, user_id, bucket) WHERE notification_id IS NULL DO NOTHING
            $q$, audience)
        USING topic, ids, p_lo, p_hi,
              take_blocks(pg_get_serial_sequence('digest_items', 'id')::regclass, chunk_covered),
              ev.id, ev.type, ev.data ->> et.digest_key, ev.data ->> et.digest_actor;
    ELSE
        SELECT array_agg(r.channel), array_agg(r.kind), array_agg(r.escalation),
               array_agg(r.delay_s)
        INTO channels, kinds, escalations, delays
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

        -- Their outbox rows, one per route not suppressed, named by their ids
        -- (uuid_v7_of(): uuid_v7() is volatile). A notification that existed
        -- before (a repeat, which no chunk makes: the ranges are disjoint) may have its
        -- rows already; only then is each checked for them ($11).
        EXECUTE $q$
            INSERT INTO outbox (id, bucket, event_id, kind, consumer, ordering_key, payload,
                                next_attempt_at, notification_id, reason)
            SELECT d.row_id, d.bucket, uuid_v7_of(now(), d.row_id), 'notification', d.channel,
                   d.user_id,
                   CASE WHEN d.escalation THEN '{"escalation": true}'::jsonb
                        ELSE '{}'::jsonb END,
                   d.until, d.id, CASE WHEN d.until > d.owed_at THEN 'quiet_hours' END
            FROM (
                SELECT block_id($1, row_number() OVER (PARTITION BY n.bucket
                                                       ORDER BY n.id, r.channel, r.escalation)
                                    - 1, n.bucket) AS row_id,
                       n.bucket, n.id, n.user_id, r.channel, r.escalation,
                       $5 + make_interval(secs => r.delay_s) AS owed_at,
                       notify_send_at($5 + make_interval(secs => r.delay_s),
                                      coalesce(u.timezone, 'UTC'),
                                      notify_quiet_hours($6, $7, p.quiet_hours, r.channel))
                           AS until
                FROM notifications AS n
                LEFT JOIN users AS u ON u.id = n.user_id
                LEFT JOIN preferences AS p ON p.user_id = n.user_id
                CROSS JOIN unnest($8::text[], $9::boolean[], $10::float8[])
                    AS r (channel, escalation, delay_s)
                WHERE n.event_id = $2 AND n.user_id > $3 AND n.user_id <= $4
                  AND NOT coalesce(n.suppressed ? r.channel, false)
                  AND NOT ($11 AND EXISTS (SELECT 1 FROM outbox AS o
                                           WHERE o.notification_id = n.id
                                             AND o.bucket = n.bucket))
            ) AS d
            $q$
        USING take_blocks(pg_get_serial_sequence('outbox', 'id')::regclass,
                          chunk_covered::bigint * coalesce(cardinality(channels), 0)),
              ev.id, p_lo, p_hi, due, cat.transactional, et.priority, channels, escalations,
              delays, notified < chunk_covered;
        GET DIAGNOSTICS queued = ROW_COUNT;
        -- Every channel of the type: the rows just written are on the workers, and a
        -- dispatcher woken for a channel with nothing due claims nothing.
        IF queued > 0 THEN
            PERFORM wake_dispatchers(ARRAY(SELECT DISTINCT unnest(channels)), 'dispatch',
                                     'dispatcher.wake');
        END IF;
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
