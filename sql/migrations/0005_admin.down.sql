-- Revision 0005 downgrade: drops the admin panel's tables and goes back to 'dead' for
-- refused rows (in the reverse order of the up file).

-- == mailings: fan-out skips cancelled events ==
-- Back to revision 0004's fan-out, which knows no cancelled event.
DROP FUNCTION IF EXISTS cancel_event(uuid);
CREATE OR REPLACE FUNCTION notify_claim_chunk(p_event uuid, chunk integer)
RETURNS TABLE (lo text, hi text)
LANGUAGE plpgsql AS $$
DECLARE
    ev events%ROWTYPE;
    bound text;
BEGIN
    SELECT * INTO ev FROM events AS e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND OR ev.status = 'done' THEN
        RETURN;
    END IF;
    bound := notify_audience_bound(ev.recipients, coalesce(ev.cursor, ''), chunk);
    IF bound IS NOT NULL THEN
        INSERT INTO event_chunks (event_id, lo, hi) VALUES (p_event, coalesce(ev.cursor, ''), bound);
        UPDATE events AS e SET cursor = bound, status = 'materializing', updated_at = now()
        WHERE e.id = p_event;
        RETURN QUERY SELECT coalesce(ev.cursor, ''), bound;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT c.lo, c.hi FROM event_chunks AS c
        WHERE c.event_id = p_event AND c.covered IS NULL
        ORDER BY c.lo
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
END
$$;

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

CREATE OR REPLACE FUNCTION notify_finish(p_event uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    ev events%ROWTYPE;
    ids text[];
BEGIN
    SELECT * INTO ev FROM events AS e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF ev.status = 'done' THEN
        RETURN true;
    END IF;
    IF notify_audience_bound(ev.recipients, coalesce(ev.cursor, ''), 1) IS NOT NULL
       OR EXISTS (SELECT 1 FROM event_chunks AS c
                  WHERE c.event_id = p_event AND c.covered IS NULL) THEN
        RETURN false;
    END IF;
    ids := ARRAY(SELECT DISTINCT jsonb_array_elements_text(ev.recipients -> 'user_ids'));
    UPDATE events AS e
    SET status = 'done', materialized_at = now(), updated_at = now(),
        no_recipient = cardinality(ids)
                       - (SELECT count(*) FROM users AS u WHERE u.id = ANY(ids))
    WHERE e.id = p_event;
    RETURN true;
END
$$;

DROP TABLE IF EXISTS mailings;
DROP TABLE IF EXISTS provider_controls;
DROP TABLE IF EXISTS consumer_controls;
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS admin_sessions;
DROP TABLE IF EXISTS admin_login_failures;
DROP TABLE IF EXISTS admin_users;

-- == mailings: a cancelled event ==
UPDATE events SET status = 'done', updated_at = now() WHERE status = 'cancelled';
ALTER TABLE events DROP CONSTRAINT events_status_check;
ALTER TABLE events ADD CONSTRAINT events_status_check
    CHECK (status IN ('scheduled', 'materializing', 'done'));

-- == ops: functions that read row states ==
-- Back to revision 0004's prune, which knows only 'dead'.
CREATE OR REPLACE FUNCTION prune_retention_batch(
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

-- == ops: one vocabulary for row states ==
DROP VIEW outbox_consumer_stats;
CREATE VIEW outbox_consumer_stats AS
SELECT consumer,
       count(*) FILTER (WHERE status = 'pending')                                  AS pending,
       count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now())     AS due,
       count(*) FILTER (WHERE status = 'pending' AND claimed_until > now())        AS in_flight,
       count(*) FILTER (WHERE status = 'delivered')                                AS delivered,
       count(*) FILTER (WHERE status = 'dead')                                     AS dead,
       min(created_at) FILTER (WHERE status = 'pending')                           AS oldest_pending_at
FROM outbox
GROUP BY consumer;
DROP INDEX outbox_dead_idx;
CREATE INDEX outbox_dead_idx ON outbox (consumer, updated_at) WHERE status = 'dead';
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
UPDATE outbox SET status = 'dead', updated_at = now() WHERE status = 'failed';
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'suppressed'));
