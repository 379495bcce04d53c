-- 0012_fanout_pushdown down: uuid_v7_of, block_id, take_blocks, notify_audience_sql, notify_audience, notify_audience_bound, notify_materialize_chunk, as 0011_user_bucket left them.

DROP TABLE buckets;
DROP INDEX user_topics_bucket_idx;
DROP INDEX users_bucket_idx;
ALTER TABLE digest_items ALTER COLUMN id SET INCREMENT BY 1;
ALTER TABLE notifications ALTER COLUMN id SET INCREMENT BY 1;
ALTER TABLE outbox ALTER COLUMN id SET INCREMENT BY 1;

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

DROP FUNCTION IF EXISTS take_blocks(seq regclass, rows bigint);

DROP FUNCTION IF EXISTS block_id(blocks bigint[], n bigint, bucket smallint);

DROP FUNCTION IF EXISTS uuid_v7_of(at timestamptz, id bigint);
