-- 0011_user_bucket down: user_bucket, notify_audience, notify_audience_bound, notify_type_routes, notify_materialize_chunk, notify_finish, notify_event, cancel_event, erase_user, flush_digests, prune_retention_batch, prune_retention, analytics_notification_decisions, as 0010_citus left them.

DROP VIEW IF EXISTS analytics_notification_suppressions;
DROP VIEW IF EXISTS analytics_notification_funnel;
DROP VIEW IF EXISTS analytics_notification_decisions;

-- From sql/migrations/0009_shard_key.up.sql.
-- Everything past its age: first whole days (drop_retained_partitions() detaches a day
-- per transaction, drop_detached_partitions() drops it in the next; after making the days
-- ahead, maintain_partitions()), then what is left batch after batch with a COMMIT
-- after each, so no lock or snapshot is held for long however large the backlog; `pause`
-- between batches leaves the database to the intake. Totals go to the server log. It commits, so it must be
-- CALLed on its own, outside a transaction block; pg_cron does that:
--   SELECT cron.schedule('mark-notify-retention', '17 3 * * *',
--       $$CALL prune_retention(delivered => '7 days', inbox => '90 days', dead => '30 days',
--                              attempts => '30 days', digest_items => '7 days',
--                              batch_size => 250, pause => '10 milliseconds')$$);
-- The defaults are those of [retention] (service/config/schedule.py); the Procrastinate
-- backend runs the same loop from Python (service/schedule/retention.py).
CREATE OR REPLACE PROCEDURE prune_retention(
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
    days integer;
BEGIN
    PERFORM maintain_partitions();
    COMMIT;
    days := 0;
    -- A day per transaction: the parent is locked from the detach to the commit.
    LOOP
        PERFORM drop_detached_partitions();
        COMMIT;
        PERFORM drop_retained_partitions(delivered, inbox, dead, attempts);
        EXIT WHEN NOT FOUND;
        days := days + 1;
        COMMIT;
    END LOOP;
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
    RAISE LOG 'prune_retention: dropped % days, pruned % in % batches', days, totals, batches;
END
$$;

-- From sql/migrations/0005_admin.up.sql.
DROP FUNCTION prune_retention_batch(delivered interval, inbox interval, dead interval, attempts interval, digest_items interval, batch_size integer, delivered_from timestamptz, dead_from timestamptz, attempts_from timestamptz, digest_items_from timestamptz, buckets smallint[]);
-- == ops: functions that read row states ==
-- The retention prune's dead letters are the failed rows as well as the dead ones.
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

    -- Dead letters (failed and dead rows) the same way, through outbox_dead_idx.
    WITH RECURSIVE consumers AS (
        SELECT max(o.consumer) AS consumer FROM outbox AS o
        WHERE o.status IN ('failed', 'dead')
        UNION ALL
        SELECT (SELECT max(o.consumer) FROM outbox AS o
                WHERE o.status IN ('failed', 'dead') AND o.consumer < c.consumer)
        FROM consumers AS c
        WHERE c.consumer IS NOT NULL
    ),
    candidates AS MATERIALIZED (
        SELECT old.id, old.updated_at
        FROM consumers AS c
        CROSS JOIN LATERAL (
            SELECT o.id, o.updated_at FROM outbox AS o
            WHERE o.consumer = c.consumer AND o.status IN ('failed', 'dead')
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
          AND o.status IN ('failed', 'dead') AND o.updated_at < dead_before
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
    -- make it pending meanwhile. Old attempts of pending, failed and dead rows are stepped
    -- over.
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

-- From sql/migrations/0009_shard_key.up.sql.
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
        INSERT INTO notifications (id, bucket, event_id, user_id, type, category, suppressed,
                                   data)
        OVERRIDING SYSTEM VALUE
        SELECT j.notification_id, subject_bucket(j.user_id), j.event_id, j.user_id, j.type,
               j.category, j.suppressed, j.data
        FROM judged AS j
        ORDER BY j.notification_id
    ),
    queued AS (
        INSERT INTO outbox (bucket, kind, consumer, ordering_key, payload, next_attempt_at,
                            notification_id, reason)
        SELECT subject_bucket(j.user_id), 'notification', x.channel, j.user_id,
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

-- From sql/migrations/0003_notify.up.sql.
-- Forget a user: contacts, devices, topics and preferences go; their notifications stay
-- as anonymous history (user id cleared), and rows not yet sent are suppressed.
CREATE OR REPLACE FUNCTION erase_user(p_user text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbox AS o SET status = 'suppressed', reason = 'erased', ordering_key = 'erased',
                           claimed_until = NULL, updated_at = now()
    FROM notifications AS n
    WHERE n.user_id = p_user AND o.notification_id = n.id AND o.status = 'pending';
    UPDATE outbox AS o SET ordering_key = 'erased', updated_at = now()
    FROM notifications AS n
    WHERE n.user_id = p_user AND o.notification_id = n.id AND o.ordering_key <> 'erased';
    UPDATE notifications SET user_id = NULL, updated_at = now() WHERE user_id = p_user;
    DELETE FROM users WHERE id = p_user;
    RETURN FOUND;
END
$$;

-- From sql/migrations/0005_admin.up.sql.
-- Cancel an event: whatever has not gone out never will. Its fan-out job, if it has not
-- started (a future send_at waits as one), is removed; the fan-out still to come stops
-- (notify_claim_chunk() and notify_materialize_chunk() skip a cancelled event); its
-- pending deliveries, held and escalations included, are suppressed with reason
-- 'cancelled'. Deliveries already made stay as they are; a row a dispatcher holds at this
-- moment is suppressed too, and its attempt, if it went out, is in delivery_attempts.
-- FOR UPDATE waits for the chunks being materialized, so their rows are suppressed with
-- the rest. An event that was done with nothing pending stays done (nothing to cancel).
-- Returns the status before, the deliveries suppressed and whether the job was removed;
-- no row for an unknown event.
CREATE OR REPLACE FUNCTION cancel_event(p_event uuid)
RETURNS TABLE (previous text, suppressed bigint, job_removed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    ev events%ROWTYPE;
    stopped bigint;
    removed boolean;
BEGIN
    SELECT * INTO ev FROM events AS e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    DELETE FROM procrastinate_jobs AS j
    WHERE j.queueing_lock = 'materialize:' || p_event AND j.status = 'todo';
    removed := FOUND;
    UPDATE outbox AS o SET status = 'suppressed', reason = 'cancelled', claimed_until = NULL,
                           updated_at = now()
    FROM notifications AS n
    WHERE n.event_id = p_event AND o.notification_id = n.id AND o.status = 'pending';
    GET DIAGNOSTICS stopped = ROW_COUNT;
    IF ev.status <> 'done' OR stopped > 0 THEN
        UPDATE events AS e SET status = 'cancelled', updated_at = now() WHERE e.id = p_event;
    END IF;
    RETURN QUERY SELECT ev.status, stopped, removed;
END
$$;

-- From sql/migrations/0003_notify.up.sql.
-- Accept an event, as POST /v1/events does (it calls this function), for producers that
-- share the database and want the event to commit with their own transaction:
--   SELECT * FROM notify_event('billing', 'receipt-1093', 'payment_receipt',
--                              '{"user_ids": ["u1"]}', '{"amount": "9.99", ...}');
-- recipients: {"user_ids": [...]}, {"users": [{"id", "email", "phone", "locale",
-- "timezone"}]} (upserted, fields left out keep their value), {"topic": "..."} or
-- {"all": true}. The (producer, idempotency_key) pair is unique forever: a repeat, even a
-- concurrent one, returns the first event with created = false and writes nothing. An
-- explicit list is fanned out at once; a topic or everyone in chunks by the dispatcher's
-- `notify.materialize` task; a future send_at waits in procrastinate_jobs until then.
CREATE OR REPLACE FUNCTION notify_event(
    producer text, idempotency_key text, type text, recipients jsonb, data jsonb,
    send_at timestamptz DEFAULT NULL, chunk integer DEFAULT 50000
) RETURNS TABLE (event_id uuid, status text, created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    et notify_event_types%ROWTYPE;
    stored jsonb := recipients;
    new_id uuid;
    missing text[];
    at timestamptz := coalesce(send_at, now());
BEGIN
    SELECT * INTO et FROM notify_event_types AS t WHERE t.name = notify_event.type AND t.enabled;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', type USING ERRCODE = 'invalid_parameter_value';
    END IF;
    missing := ARRAY(SELECT k FROM unnest(et.required_data) AS k WHERE NOT data ? k);
    IF jsonb_typeof(data) <> 'object' OR cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'event data lacks %', array_to_string(missing, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(recipients) AS k
        WHERE k IN ('user_ids', 'users', 'topic', 'all')) <> 1 THEN
        RAISE EXCEPTION 'recipients needs exactly one of user_ids, users, topic, all'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF recipients ? 'users' THEN
        stored := jsonb_build_object(
            'user_ids', jsonb_path_query_array(recipients, '$.users[*].id'));
    END IF;

    INSERT INTO events AS e (producer, idempotency_key, type, recipients, data, send_at, status)
    VALUES (producer, idempotency_key, type, stored, data, at,
            CASE WHEN at > now() THEN 'scheduled' ELSE 'materializing' END)
    ON CONFLICT ON CONSTRAINT events_producer_idempotency_key_key DO NOTHING
    RETURNING e.id INTO new_id;
    IF new_id IS NULL THEN
        -- A repeat: the first event (committed, or this waited for its transaction).
        RETURN QUERY SELECT e.id, e.status, false FROM events AS e
            WHERE e.producer = notify_event.producer
              AND e.idempotency_key = notify_event.idempotency_key;
        RETURN;
    END IF;

    IF recipients ? 'users' THEN
        INSERT INTO users AS u (id, email, phone, locale, timezone)
        SELECT x.id, x.email, x.phone, x.locale, x.timezone
        FROM jsonb_to_recordset(recipients -> 'users')
             AS x(id text, email text, phone text, locale text, timezone text)
        ORDER BY x.id
        ON CONFLICT (id) DO UPDATE
            SET email = coalesce(excluded.email, u.email),
                phone = coalesce(excluded.phone, u.phone),
                locale = coalesce(excluded.locale, u.locale),
                timezone = coalesce(excluded.timezone, u.timezone),
                updated_at = now();
    END IF;

    IF at > now() OR NOT stored ? 'user_ids' THEN
        -- Later, or large: the dispatcher's task materializes it in chunks.
        INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args, scheduled_at)
        VALUES ('notify', 'notify.materialize', 'materialize:' || new_id,
                jsonb_build_object('event_id', new_id),
                CASE WHEN at > now() THEN at END);
    ELSE
        PERFORM notify_materialize(
            new_id, greatest(chunk, jsonb_array_length(stored -> 'user_ids') + 1));
    END IF;
    RETURN QUERY SELECT e.id, e.status, true FROM events AS e WHERE e.id = new_id;
END
$$;

-- From sql/migrations/0005_admin.up.sql.
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
    IF ev.status IN ('done', 'cancelled') THEN
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

-- From sql/migrations/0009_shard_key.up.sql.
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
            SELECT subject_bucket(a.id), ev.id, a.id, ev.type, ev.data ->> et.digest_key,
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
            SELECT subject_bucket(user_id), ev.id, user_id, ev.type, et.category,
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

-- From sql/migrations/0004_schedule.up.sql.
-- The channels a type is sent on: each of its channels at once, and its escalation
-- channel escalation_after_s later.
CREATE OR REPLACE FUNCTION notify_type_routes(p_type text)
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

-- From sql/migrations/0003_notify.up.sql.
-- The id of the n-th recipient after `after` (or of the last one, if fewer remain); NULL
-- when none remains. A chunk of the fan-out ends there.
CREATE OR REPLACE FUNCTION notify_audience_bound(recipients jsonb, after text, n integer) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT max(id) FROM (
        SELECT id FROM (
            SELECT u.id FROM users AS u WHERE recipients ? 'all' AND u.id > after
            UNION ALL
            SELECT ut.user_id FROM user_topics AS ut
            WHERE ut.topic = recipients ->> 'topic' AND ut.user_id > after
            UNION ALL
            SELECT u.id FROM users AS u
            WHERE u.id = ANY(ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')))
              AND u.id > after
        ) AS audience
        ORDER BY id
        LIMIT n
    ) AS chunk
$$;

-- From sql/migrations/0003_notify.up.sql.
-- An event's audience after user id `after` (exclusive) up to `upto` (inclusive): everyone,
-- a topic's members or the listed ids that exist, with what the fan-out needs of them.
CREATE OR REPLACE FUNCTION notify_audience(recipients jsonb, after text, upto text)
RETURNS TABLE (id text, email text, phone text, timezone text)
LANGUAGE sql STABLE AS $$
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
      AND u.id > after AND u.id <= upto
$$;

-- Rows back to the buckets 0009 gave them: subject_bucket() of the user.
UPDATE notifications SET bucket = subject_bucket(user_id)
WHERE user_id IS NOT NULL AND bucket <> subject_bucket(user_id);
UPDATE outbox SET bucket = subject_bucket(ordering_key)
WHERE kind = 'notification' AND ordering_key <> 'erased'
  AND bucket <> subject_bucket(ordering_key);
UPDATE delivery_attempts AS a SET bucket = o.bucket
FROM outbox AS o
WHERE o.id = a.outbox_id AND o.kind = 'notification' AND a.bucket <> o.bucket;
UPDATE digest_items SET bucket = subject_bucket(user_id)
WHERE bucket <> subject_bucket(user_id);

DROP FUNCTION IF EXISTS user_bucket(user_id text);

-- From sql/migrations/0009_shard_key.up.sql.
-- The notification half's decisions, one row per notification and channel: an outbox row
-- (queued; its status says how it went) or an entry of the notification's `suppressed`
-- (never queued: muted, preference, no_contact). seen: the row was delivered and the
-- notification's user marked it seen, as GET /v1/events/{id} counts it. The seen tag is
-- [notify].seen_tag, which SQL cannot read from the config file: the setting
-- mark_notify.seen_tag (ALTER DATABASE ... SET) overrides the default 'notifications'.
-- Unlike the status endpoint this counts marks past remember_for that are not purged
-- yet: an analyst asks whether the user saw it, not whether the service still remembers.
CREATE OR REPLACE VIEW analytics_notification_decisions AS
SELECT n.id AS notification_id, n.type AS event_type, n.created_at, o.consumer AS channel,
       o.status, o.reason, true AS queued,
       o.status = 'delivered' AND EXISTS (
           SELECT 1 FROM seen_marks AS m
           WHERE m.tag = coalesce(nullif(current_setting('mark_notify.seen_tag', true), ''),
                                  'notifications')
             AND m.item_id = n.id::text AND m.subject_key = 'client:' || n.user_id
       ) AS seen
FROM notifications AS n
JOIN outbox AS o ON o.notification_id = n.id
UNION ALL
SELECT n.id, n.type, n.created_at, s.key, 'suppressed', s.value, false, false
FROM notifications AS n
CROSS JOIN LATERAL jsonb_each_text(n.suppressed) AS s
WHERE n.suppressed IS NOT NULL;

-- From sql/migrations/0009_shard_key.up.sql.
-- The funnel per UTC day of the notification, event type and channel: queued = pending +
-- sent + failed + dead + suppressed (every outbox row made); not_queued never got a row.
-- sent_rate = sent / queued, seen_rate = seen / sent. A notification sent on two channels
-- and seen once is seen on both: a mark says the user saw it, not through which channel.
CREATE OR REPLACE VIEW analytics_notification_funnel AS
SELECT (d.created_at AT TIME ZONE 'UTC')::date AS day,
       d.event_type,
       d.channel,
       count(*) FILTER (WHERE d.queued) AS queued,
       count(*) FILTER (WHERE d.status = 'pending') AS pending,
       count(*) FILTER (WHERE d.status = 'delivered') AS sent,
       count(*) FILTER (WHERE d.status = 'failed') AS failed,
       count(*) FILTER (WHERE d.status = 'dead') AS dead,
       count(*) FILTER (WHERE d.queued AND d.status = 'suppressed') AS suppressed,
       count(*) FILTER (WHERE NOT d.queued) AS not_queued,
       count(*) FILTER (WHERE d.seen) AS seen,
       (count(*) FILTER (WHERE d.status = 'delivered'))::float8
           / nullif(count(*) FILTER (WHERE d.queued), 0) AS sent_rate,
       (count(*) FILTER (WHERE d.seen))::float8
           / nullif(count(*) FILTER (WHERE d.status = 'delivered'), 0) AS seen_rate
FROM analytics_notification_decisions AS d
GROUP BY (d.created_at AT TIME ZONE 'UTC')::date, d.event_type, d.channel;

-- From sql/migrations/0009_shard_key.up.sql.
-- Why deliveries were not sent, per UTC day of the notification, event type, channel and
-- reason: never queued (queued false: muted, preference, no_contact) or queued and then
-- dropped (queued true: seen before an escalation was due, expired, no_contact, erased).
CREATE OR REPLACE VIEW analytics_notification_suppressions AS
SELECT (d.created_at AT TIME ZONE 'UTC')::date AS day,
       d.event_type,
       d.channel,
       d.queued,
       coalesce(d.reason, 'unknown') AS reason,
       count(*) AS notifications
FROM analytics_notification_decisions AS d
WHERE d.status = 'suppressed'
GROUP BY (d.created_at AT TIME ZONE 'UTC')::date, d.event_type, d.channel, d.queued,
         coalesce(d.reason, 'unknown');
