-- Revision 0009 downgrade: back to one outbox and one delivery_attempts table, rows moved
-- back; the bucket columns, leases and the partition functions go.

DROP VIEW analytics_preference_optouts;
DROP VIEW analytics_notification_suppressions;
DROP VIEW analytics_notification_funnel;
DROP VIEW analytics_notification_decisions;
DROP VIEW analytics_seen_to_delivered;
DROP VIEW analytics_seen_daily;
DROP VIEW analytics_deliveries_hourly;
DROP VIEW outbox_consumer_stats;

-- Everything past its age, batch after batch with a COMMIT after each, so no lock or
-- snapshot is held for long however large the backlog; `pause` between batches leaves
-- the database to the intake. Totals go to the server log. It commits, so it must be
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

-- The fan-out of one claimed chunk: its recipients as notifications and outbox rows, in one
-- set-based statement. Per recipient and channel it applies, in this order: the global
-- mute and the category switches (not for transactional categories), a missing contact
-- (suppressed, kept on the notification), quiet hours (the row is due when they end; not
-- for transactional categories or high priority), and the escalation delay: the routes
-- and rules flush_digests() applies too (notify_type_routes(), notify_suppression(),
-- notify_quiet_hours(), notify_send_at()). A digest-mode type's recipients get a digest
-- item instead, under the event's data[digest_key], for flush_digests() to send. The
-- chunk's row is locked while it runs, so a chunk is done once; UNIQUE (event_id, user_id)
-- makes a repeat a no-op. Returns the recipients covered (0: already done by another worker,
-- or the event was cancelled: the chunk is closed with nobody covered).
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

DROP FUNCTION drop_retained_partitions(interval, interval, interval, interval, integer);
DROP FUNCTION drop_detached_partitions();
DROP FUNCTION release_buckets(text);
DROP FUNCTION lease_buckets(text, text[], float8);
DROP FUNCTION maintain_partitions();
DROP TABLE dispatch_members;
DROP TABLE dispatch_leases;

ALTER TABLE outbox RENAME TO outbox_v9;
ALTER SEQUENCE outbox_id_seq RENAME TO outbox_v9_id_seq;
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_v9;
-- Free the names of the tables' keys and indexes for the new tables.
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
             WHERE conrelid IN ('outbox_v9'::regclass, 'delivery_attempts_v9'::regclass) AND contype IN ('p', 'u', 'c') LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.t, r.conname);
    END LOOP;
    FOR r IN SELECT indexrelid::regclass AS i FROM pg_index
             WHERE indrelid IN ('outbox_v9'::regclass, 'delivery_attempts_v9'::regclass) LOOP
        EXECUTE format('DROP INDEX %s', r.i);
    END LOOP;
END
$$;

CREATE TABLE outbox (
    id              bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT uuid_v7(),
    kind            text        NOT NULL CHECK (kind IN ('seen', 'notification')),
    consumer        text        NOT NULL,
    ordering_key    text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed', 'dead',
                                                  'suppressed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    claimed_by      text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- bin/redeliver gives a requeued row a fresh retry budget: max_attempts counts the
    -- attempts after attempt_base, max_age runs from requeued_at. Attempt numbers go on
    -- rising, so delivery_attempts keeps the whole history.
    attempt_base    integer     NOT NULL DEFAULT 0,
    requeued_at     timestamptz,
    -- Notification rows: the notification delivered. reason: why a row was held
    -- ('quiet_hours') or suppressed, never sent ('seen' before an escalation was due,
    -- 'expired' past its type's ttl, 'no_contact' when the contact went, 'erased').
    notification_id bigint,
    reason          text,
    -- The W3C traceparent of the request that wrote the row (service/tracing.py): each
    -- delivery attempt sends a child of it, so a mark can be followed to its consumer.
    traceparent     text,
    UNIQUE (event_id)
);

-- The claim: due pending rows of one consumer, oldest due first.
CREATE INDEX outbox_due_idx ON outbox (consumer, next_attempt_at) WHERE status = 'pending';

-- Ordered consumers (seen consumers only): the head of each subject's queue.
CREATE INDEX outbox_ordering_idx ON outbox (consumer, ordering_key, id)
    WHERE status = 'pending' AND kind = 'seen';
CREATE INDEX outbox_updated_at_idx ON outbox (updated_at);

-- Dead letters: 'failed' (the consumer refused the row: a permanent 4xx) and 'dead'
-- (retries or age ran out).
CREATE INDEX outbox_dead_idx ON outbox (consumer, updated_at) WHERE status IN ('failed', 'dead');
CREATE INDEX outbox_notification_idx ON outbox (notification_id) WHERE notification_id IS NOT NULL;

-- Every delivery attempt, for ops and analysts.
CREATE TABLE delivery_attempts (
    outbox_id   bigint           NOT NULL,
    attempt     integer          NOT NULL,
    consumer    text             NOT NULL,
    started_at  timestamptz      NOT NULL,
    duration_ms double precision NOT NULL,
    outcome     text             NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed', 'dead')),
    status_code integer,
    error       text,
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    -- The SMS or push provider that took the attempt (they fail over to one another).
    provider    text,
    PRIMARY KEY (outbox_id, attempt)
);
CREATE INDEX delivery_attempts_updated_at_idx ON delivery_attempts (updated_at);
CREATE INDEX delivery_attempts_consumer_started_idx ON delivery_attempts (consumer, started_at);

-- Retention: the index the prune walks, on core's outbox (service/schedule/retention.py).

-- Delivered and suppressed rows, per consumer, for the prune: it finds each consumer's
-- oldest finished rows here without stepping over the rows it keeps. Through
-- outbox_updated_at_idx every batch would walk past all old pending rows (those of a
-- disabled consumer wait indefinitely), dead rows and inbox rows, which are kept longer
-- than the rows around them; inbox rows alone are one per notification for 90 days.
CREATE INDEX outbox_finished_idx ON outbox (consumer, updated_at)
    WHERE status IN ('delivered', 'suppressed');

INSERT INTO outbox (id, event_id, kind, consumer, ordering_key, payload, status, attempts, next_attempt_at, claimed_until, claimed_by, last_error, created_at, updated_at, delivered_at, attempt_base, requeued_at, notification_id, reason, traceparent) SELECT id, event_id, kind, consumer, ordering_key, payload, status, attempts, next_attempt_at, claimed_until, claimed_by, last_error, created_at, updated_at, delivered_at, attempt_base, requeued_at, notification_id, reason, traceparent FROM outbox_v9;
SELECT setval(pg_get_serial_sequence('outbox', 'id'), s.last_value, s.is_called)
FROM outbox_v9_id_seq AS s;
INSERT INTO delivery_attempts (outbox_id, attempt, consumer, started_at, duration_ms, outcome, status_code, error, updated_at, provider)
SELECT outbox_id, attempt, consumer, started_at, duration_ms, outcome, status_code, error, updated_at, provider FROM delivery_attempts_v9
ON CONFLICT DO NOTHING;
DROP TABLE delivery_attempts_v9;
DROP TABLE outbox_v9;

ALTER TABLE seen_marks DROP CONSTRAINT seen_marks_pkey, DROP COLUMN bucket,
    ADD PRIMARY KEY (tag, item_id, subject_key);
ALTER TABLE notifications DROP CONSTRAINT notifications_pkey,
    DROP CONSTRAINT notifications_event_id_user_id_bucket_key, DROP COLUMN bucket,
    ADD PRIMARY KEY (id), ADD UNIQUE (event_id, user_id);
DROP INDEX digest_items_open_event_idx;
ALTER TABLE digest_items DROP CONSTRAINT digest_items_pkey, DROP COLUMN bucket,
    ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX digest_items_open_event_idx ON digest_items (event_id, user_id)
    WHERE notification_id IS NULL;

DROP FUNCTION ensure_partitions(regclass, date, date);
DROP FUNCTION subject_bucket(text);
DROP FUNCTION bucket_count();
-- Per-consumer delivery state at a glance, for ops dashboards and analysts.
CREATE VIEW outbox_consumer_stats AS
SELECT consumer,
       count(*) FILTER (WHERE status = 'pending')                                  AS pending,
       count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now())     AS due,
       count(*) FILTER (WHERE status = 'pending' AND claimed_until > now())        AS in_flight,
       count(*) FILTER (WHERE status = 'delivered')                                AS delivered,
       count(*) FILTER (WHERE status = 'failed')                                   AS failed,
       count(*) FILTER (WHERE status = 'dead')                                     AS dead,
       min(created_at) FILTER (WHERE status = 'pending')                           AS oldest_pending_at
FROM outbox
GROUP BY consumer;

-- Analytics: stable views for analysts.
-- Their names and columns are a contract with analysts' saved queries and dashboards
-- (docs/analytics.md documents them, tests/integration/test_analytics.py pins them): add
-- a column at the end or a new view rather than change what one means. Time buckets are
-- UTC whatever the session's TimeZone, so two analysts in different zones get the same
-- rows. The views read the base tables (nothing is materialized, so nothing goes stale)
-- and see only what retention keeps. Bucket columns are plain expressions of one table's
-- column, so an outer filter on them is pushed down into that table's scan.

-- Delivery attempts per consumer (a seen consumer or a notification channel) and UTC hour
-- of the attempt's start. An attempt that ends its row is delivered, failed or dead; a
-- retry ends nothing. success_rate = delivered / ended, so a row that needed retries
-- still counts once as a success, and `ended` is there to re-aggregate the rate over
-- several hours (sum(delivered) / sum(ended)); percentiles cannot be re-aggregated.
CREATE VIEW analytics_deliveries_hourly AS
SELECT date_trunc('hour', a.started_at, 'UTC') AS hour,
       a.consumer,
       count(*) AS attempts,
       count(*) FILTER (WHERE a.outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE a.outcome = 'retry') AS retried,
       count(*) FILTER (WHERE a.outcome = 'failed') AS failed,
       count(*) FILTER (WHERE a.outcome = 'dead') AS dead,
       count(*) FILTER (WHERE a.outcome <> 'retry') AS ended,
       (count(*) FILTER (WHERE a.outcome = 'delivered'))::float8
           / nullif(count(*) FILTER (WHERE a.outcome <> 'retry'), 0) AS success_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS p95_ms
FROM delivery_attempts AS a
GROUP BY date_trunc('hour', a.started_at, 'UTC'), a.consumer;

-- Seen marks per tag and UTC day of arrival. A repeat inside remember_for changes no
-- mark, so every mark is a new one; a mark revived after it expired counts on the day of
-- its revival. Marks are purged after their tag's remember_for, so older days thin out.
CREATE VIEW analytics_seen_daily AS
SELECT (m.seen_at AT TIME ZONE 'UTC')::date AS day,
       m.tag,
       count(*) AS new_marks,
       count(DISTINCT m.subject_key) AS subjects,
       count(DISTINCT m.item_id) AS items
FROM seen_marks AS m
GROUP BY (m.seen_at AT TIME ZONE 'UTC')::date, m.tag;

-- Seconds from a seen mark's arrival to its delivery, per consumer and UTC hour of
-- delivery. Arrival is the outbox row's created_at: the write path stamps it and the
-- mark's seen_at with the same now(), and the row outlives the mark's purge and a
-- revival of the mark (which gets a row of its own). A row bin/redeliver requeued counts
-- from its first arrival to its last delivery; `requeued` says how many did.
CREATE VIEW analytics_seen_to_delivered AS
SELECT date_trunc('hour', o.delivered_at, 'UTC') AS hour,
       o.consumer,
       count(*) AS delivered,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM o.delivered_at - o.created_at)::float8) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (
           ORDER BY extract(epoch FROM o.delivered_at - o.created_at)::float8) AS p95_seconds,
       max(extract(epoch FROM o.delivered_at - o.created_at)::float8) AS max_seconds,
       count(*) FILTER (WHERE o.requeued_at IS NOT NULL) AS requeued
FROM outbox AS o
WHERE o.kind = 'seen' AND o.status = 'delivered'
GROUP BY date_trunc('hour', o.delivered_at, 'UTC'), o.consumer;

-- The notification half's decisions, one row per notification and channel: an outbox row
-- (queued; its status says how it went) or an entry of the notification's `suppressed`
-- (never queued: muted, preference, no_contact). seen: the row was delivered and the
-- notification's user marked it seen, as GET /v1/events/{id} counts it. The seen tag is
-- [notify].seen_tag, which SQL cannot read from the config file: the setting
-- mark_notify.seen_tag (ALTER DATABASE ... SET) overrides the default 'notifications'.
-- Unlike the status endpoint this counts marks past remember_for that are not purged
-- yet: an analyst asks whether the user saw it, not whether the service still remembers.
CREATE VIEW analytics_notification_decisions AS
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

-- The funnel per UTC day of the notification, event type and channel: queued = pending +
-- sent + failed + dead + suppressed (every outbox row made); not_queued never got a row.
-- sent_rate = sent / queued, seen_rate = seen / sent. A notification sent on two channels
-- and seen once is seen on both: a mark says the user saw it, not through which channel.
CREATE VIEW analytics_notification_funnel AS
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

-- Why deliveries were not sent, per UTC day of the notification, event type, channel and
-- reason: never queued (queued false: muted, preference, no_contact) or queued and then
-- dropped (queued true: seen before an escalation was due, expired, no_contact, erased).
CREATE VIEW analytics_notification_suppressions AS
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

-- Users' own switches per category and channel (the configured pairs, and any pair a
-- user switched): preferences.channels = {category: {channel: bool}}, a pair left out
-- (or null) follows the category's default. opt_out_rate = switched_off /
-- users_with_preferences. muted is the global mute, the same on every row; silenced =
-- the users whose own choice keeps this category off this channel (muted or switched
-- off), as the fan-out decides it: none for a transactional category, which ignores both.
CREATE VIEW analytics_preference_optouts AS
WITH switches AS (
    SELECT c.key AS category, s.key AS channel, p.user_id, p.muted, s.value::boolean AS is_on
    FROM preferences AS p
    -- The fan-out reads a malformed entry as no switch; so does this, rather than fail.
    CROSS JOIN LATERAL jsonb_each(
        CASE WHEN jsonb_typeof(p.channels) = 'object' THEN p.channels ELSE '{}' END) AS c
    CROSS JOIN LATERAL jsonb_each_text(
        CASE WHEN jsonb_typeof(c.value) = 'object' THEN c.value ELSE '{}' END) AS s
    WHERE s.value IS NOT NULL
),
pairs AS (
    SELECT cat.name AS category, ch.name AS channel
    FROM notify_categories AS cat CROSS JOIN notify_channels AS ch
    WHERE cat.enabled AND ch.enabled
    UNION
    SELECT category, channel FROM switches
),
totals AS (
    SELECT count(*) AS users_with_preferences, count(*) FILTER (WHERE muted) AS muted
    FROM preferences
)
SELECT pr.category,
       pr.channel,
       cat.transactional,
       CASE WHEN cat.name IS NOT NULL
            THEN coalesce((cat.defaults ->> pr.channel)::boolean, true) END AS default_on,
       t.users_with_preferences,
       count(s.user_id) FILTER (WHERE s.is_on) AS switched_on,
       count(s.user_id) FILTER (WHERE NOT s.is_on) AS switched_off,
       (count(s.user_id) FILTER (WHERE NOT s.is_on))::float8
           / nullif(t.users_with_preferences, 0) AS opt_out_rate,
       t.muted,
       CASE WHEN coalesce(cat.transactional, false) THEN 0
            ELSE t.muted + count(s.user_id) FILTER (WHERE NOT s.is_on AND NOT s.muted)
       END AS silenced
FROM pairs AS pr
CROSS JOIN totals AS t
LEFT JOIN notify_categories AS cat ON cat.name = pr.category
LEFT JOIN switches AS s ON s.category = pr.category AND s.channel = pr.channel
GROUP BY pr.category, pr.channel, cat.name, cat.transactional, cat.defaults,
         t.users_with_preferences, t.muted;
