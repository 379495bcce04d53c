-- Revision 0003: the notification half (event types, users, events, notifications,
-- API keys) on the same outbox as seen marks.
-- Frozen once released: later changes go into a new revision and into sql/schema.sql.

-- A mark of a tag without a consumer is only remembered (the service's own notification
-- tag): it reserves no outbox row.
ALTER TABLE seen_marks ALTER COLUMN outbox_id DROP NOT NULL;

-- Notification rows: which notification a row delivers, 'suppressed' rows (never sent:
-- seen before an escalation was due, expired, contact gone), and why a row was held or
-- suppressed.
ALTER TABLE outbox ADD COLUMN notification_id bigint;
ALTER TABLE outbox ADD COLUMN reason text;
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'suppressed'));
CREATE INDEX outbox_notification_idx ON outbox (notification_id) WHERE notification_id IS NOT NULL;

-- A UUID whose first 48 bits are the Unix time in milliseconds (the layout of RFC 9562's
-- version 7): ids made one after another sort together, so the outbox's unique index on
-- event_id grows at its right edge instead of touching a random page per row.
CREATE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
ALTER TABLE outbox ALTER COLUMN event_id SET DEFAULT uuid_v7();
-- Only seen consumers are ordered; notification rows need not pay for this index.
DROP INDEX outbox_ordering_idx;
CREATE INDEX outbox_ordering_idx ON outbox (consumer, ordering_key, id)
    WHERE status = 'pending' AND kind = 'seen';

-- Which provider took an attempt (SMS and push fail over between providers).
ALTER TABLE delivery_attempts ADD COLUMN provider text;

-- Producer services' API keys. The key is shown once; only its SHA-256 is kept (the key
-- is 256 random bits, so a fast hash is as safe as a slow one and costs nothing per
-- request). `prefix` is the key's public head: it finds the row and names the key in lists.
-- `producer` scopes idempotency keys and event ownership, so a rotated key of the same
-- producer sees the same events.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    producer     text        NOT NULL,
    prefix       text        NOT NULL UNIQUE,
    secret_hash  bytea       NOT NULL,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_updated_at_idx ON api_keys (updated_at);

-- What the configuration says about channels, categories and event types, mirrored by
-- sync_notify_config() at start-up so that the fan-out (and producers calling
-- notify_event() from SQL) read it where they run. Rows of removed entries stay, disabled:
-- history refers to them.
CREATE TABLE notify_channels (
    name       text        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('email', 'sms', 'push', 'inbox')),
    enabled    boolean     NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE notify_categories (
    name          text        PRIMARY KEY,
    transactional boolean     NOT NULL,
    -- channel -> on/off before the user says otherwise; channels not listed are on.
    defaults      jsonb       NOT NULL DEFAULT '{}',
    enabled       boolean     NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE notify_event_types (
    name               text        PRIMARY KEY,
    category           text        NOT NULL,
    channels           text[]      NOT NULL,
    priority           text        NOT NULL CHECK (priority IN ('low', 'normal', 'high')),
    ttl_s              float8      NOT NULL,
    escalation_channel text,
    escalation_after_s float8,
    -- The data keys the type's templates need (read off the templates at start-up).
    required_data      text[]      NOT NULL DEFAULT '{}',
    enabled            boolean     NOT NULL DEFAULT true,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Recipients, kept by producer services. Contacts are what delivery needs, nothing more;
-- erase_user() removes the row, its devices, topics and preferences.
CREATE TABLE users (
    id         text        PRIMARY KEY,
    email      text,
    phone      text,
    locale     text,
    -- IANA zone for quiet hours; NULL is UTC.
    timezone   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_updated_at_idx ON users (updated_at);

CREATE TABLE push_devices (
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token      text        NOT NULL,
    platform   text        NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, token)
);
CREATE INDEX push_devices_updated_at_idx ON push_devices (updated_at);

-- Audiences such as "subscribers of series 123"; keyed by topic so a topic's members are
-- read in user order, which is how the fan-out walks them in chunks.
CREATE TABLE user_topics (
    topic      text        NOT NULL,
    user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, user_id)
);
CREATE INDEX user_topics_user_idx ON user_topics (user_id);
CREATE INDEX user_topics_updated_at_idx ON user_topics (updated_at);

-- A user's switches over the configured defaults: channels = {category: {channel: bool}},
-- quiet_hours = {channel: {"start": "22:00", "end": "08:00"}} in the user's time zone.
CREATE TABLE preferences (
    user_id     text        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    muted       boolean     NOT NULL DEFAULT false,
    channels    jsonb       NOT NULL DEFAULT '{}',
    quiet_hours jsonb       NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX preferences_updated_at_idx ON preferences (updated_at);

-- Events posted by producers. (producer, idempotency_key) is unique forever: a repeat is
-- the first event. recipients is {"user_ids": [...]}, {"topic": "..."} or {"all": true}
-- (inline users are upserted and kept as their ids). A large audience is materialized in
-- chunks in user-id order; `cursor` is the last user id claimed (see event_chunks).
CREATE TABLE events (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    producer        text        NOT NULL,
    idempotency_key text        NOT NULL,
    type            text        NOT NULL,
    recipients      jsonb       NOT NULL,
    data            jsonb       NOT NULL,
    send_at         timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL
                                CHECK (status IN ('scheduled', 'materializing', 'done')),
    cursor          text,
    notified        bigint      NOT NULL DEFAULT 0,
    no_recipient    bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    materialized_at timestamptz,
    UNIQUE (producer, idempotency_key)
);
CREATE INDEX events_updated_at_idx ON events (updated_at);
CREATE INDEX events_type_created_idx ON events (type, created_at);

-- One notification per event and recipient. Its deliveries are outbox rows (kind
-- 'notification', consumer = channel); a channel not sent at all is in `suppressed`
-- (channel -> 'muted' | 'preference' | 'no_contact'). The user id is cleared when the
-- user is erased, leaving anonymous history. Seen = a seen mark of [notify].seen_tag with
-- the notification id, by this user.
CREATE TABLE notifications (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid        NOT NULL,
    user_id    text,
    type       text        NOT NULL,
    category   text        NOT NULL,
    suppressed jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, user_id)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id);
CREATE INDEX notifications_updated_at_idx ON notifications (updated_at);

-- The fan-out's progress: ranges of an event's audience (user ids after `lo`, up to `hi`)
-- claimed by workers; `covered` is set when a range is materialized. A range left
-- unfinished by a worker that died is claimed again.
CREATE TABLE event_chunks (
    event_id   uuid        NOT NULL,
    lo         text        NOT NULL,
    hi         text        NOT NULL,
    covered    integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, lo)
);
CREATE INDEX event_chunks_updated_at_idx ON event_chunks (updated_at);

-- The end of a quiet-hours window (local times, may wrap midnight) that `at` falls in, in
-- time zone `tz`; `at` itself when it is outside the window or there is none.
CREATE FUNCTION quiet_hours_end(at timestamptz, tz text, quiet jsonb) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN quiet IS NULL OR s IS NULL OR e IS NULL OR s = e THEN at
        WHEN s < e AND t >= s AND t < e THEN (d + e) AT TIME ZONE tz
        WHEN s > e AND t >= s THEN ((d + 1) + e) AT TIME ZONE tz
        WHEN s > e AND t < e THEN (d + e) AT TIME ZONE tz
        ELSE at
    END
    FROM (SELECT (quiet ->> 'start')::time AS s, (quiet ->> 'end')::time AS e,
                 (at AT TIME ZONE tz)::time AS t, (at AT TIME ZONE tz)::date AS d) AS local
$$;

-- Mirror the configuration's channels, categories and event types (JSON objects keyed by
-- name); entries no longer configured are disabled, never deleted.
CREATE FUNCTION sync_notify_config(channels jsonb, categories jsonb, event_types jsonb)
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
            escalation_after_s, required_data, enabled)
    SELECT key, value ->> 'category',
           ARRAY(SELECT jsonb_array_elements_text(value -> 'channels')),
           value ->> 'priority', (value ->> 'ttl_s')::float8,
           value ->> 'escalation_channel', (value ->> 'escalation_after_s')::float8,
           ARRAY(SELECT jsonb_array_elements_text(value -> 'required_data')), true
    FROM jsonb_each(event_types)
    ON CONFLICT (name) DO UPDATE
        SET category = excluded.category, channels = excluded.channels,
            priority = excluded.priority, ttl_s = excluded.ttl_s,
            escalation_channel = excluded.escalation_channel,
            escalation_after_s = excluded.escalation_after_s,
            required_data = excluded.required_data, enabled = true, updated_at = now()
    WHERE (t.category, t.channels, t.priority, t.ttl_s, t.escalation_channel,
           t.escalation_after_s, t.required_data, t.enabled)
          IS DISTINCT FROM (excluded.category, excluded.channels, excluded.priority,
                            excluded.ttl_s, excluded.escalation_channel,
                            excluded.escalation_after_s, excluded.required_data, true);
    UPDATE notify_event_types SET enabled = false, updated_at = now()
    WHERE enabled AND NOT event_types ? name;
$$;

-- An event's audience after user id `after` (exclusive) up to `upto` (inclusive): everyone,
-- a topic's members or the listed ids that exist, with what the fan-out needs of them.
CREATE FUNCTION notify_audience(recipients jsonb, after text, upto text)
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

-- The id of the n-th recipient after `after` (or of the last one, if fewer remain); NULL
-- when none remains. A chunk of the fan-out ends there.
CREATE FUNCTION notify_audience_bound(recipients jsonb, after text, n integer) RETURNS text
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

-- Claim the next chunk of an event's audience for one fan-out worker: up to `chunk`
-- recipients after the event's cursor, recorded in event_chunks and the cursor moved past
-- it, in a short transaction of its own so that several workers materialize chunks side
-- by side. When the audience is used up, a chunk whose worker died (unfinished, and not
-- locked by a live worker) is handed out again. No row: nothing is left to claim.
CREATE FUNCTION notify_claim_chunk(p_event uuid, chunk integer)
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

-- The fan-out of one claimed chunk: its recipients as notifications and outbox rows, in one
-- set-based statement. Per recipient and channel it applies, in this order: the global
-- mute and the category switches (not for transactional categories), a missing contact
-- (suppressed, kept on the notification), quiet hours (the row is due when they end; not
-- for transactional categories or high priority), and the escalation delay. The chunk's
-- row is locked while it runs, so a chunk is done once; UNIQUE (event_id, user_id) makes
-- a repeat a no-op. Returns the recipients covered (0: already done by another worker).
CREATE FUNCTION notify_materialize_chunk(p_event uuid, p_lo text, p_hi text) RETURNS integer
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

    WITH audience AS MATERIALIZED (
        SELECT * FROM notify_audience(ev.recipients, p_lo, p_hi)
    ),
    routes AS (
        SELECT c.name AS channel, c.kind, false AS escalation, 0::float8 AS delay_s
        FROM unnest(et.channels) AS r(name) JOIN notify_channels AS c ON c.name = r.name
        UNION ALL
        SELECT c.name, c.kind, true, et.escalation_after_s
        FROM notify_channels AS c WHERE c.name = et.escalation_channel
    ),
    decided AS MATERIALIZED (
        SELECT a.id AS user_id, r.channel, r.escalation,
               CASE
                   WHEN NOT cat.transactional AND coalesce(p.muted, false) THEN 'muted'
                   WHEN NOT cat.transactional
                        AND NOT coalesce((p.channels -> et.category ->> r.channel)::boolean,
                                         (cat.defaults ->> r.channel)::boolean, true)
                       THEN 'preference'
                   WHEN (r.kind = 'email' AND a.email IS NULL)
                        OR (r.kind = 'sms' AND a.phone IS NULL)
                        OR (r.kind = 'push' AND NOT EXISTS (
                                SELECT 1 FROM push_devices AS d WHERE d.user_id = a.id))
                       THEN 'no_contact'
               END AS suppressed,
               due + make_interval(secs => r.delay_s) AS owed_at,
               CASE WHEN NOT cat.transactional AND et.priority <> 'high'
                    THEN p.quiet_hours -> r.channel END AS quiet,
               coalesce(a.timezone, 'UTC') AS timezone
        FROM audience AS a
        LEFT JOIN preferences AS p ON p.user_id = a.id
        CROSS JOIN routes AS r
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
               CASE WHEN d.escalation THEN '{"escalation": true}'::jsonb ELSE '{}'::jsonb END,
               w.until, n.id, CASE WHEN w.until > d.owed_at THEN 'quiet_hours' END
        FROM decided AS d
        JOIN notified AS n USING (user_id)
        -- Most rows have no quiet hours: the function is called only for those that do.
        CROSS JOIN LATERAL (
            SELECT CASE WHEN d.quiet IS NULL THEN d.owed_at
                        ELSE quiet_hours_end(d.owed_at, d.timezone, d.quiet) END AS until
        ) AS w
        WHERE d.suppressed IS NULL
        ORDER BY n.id, d.channel
        RETURNING consumer
    )
    SELECT (SELECT count(*) FROM audience), ARRAY(SELECT DISTINCT consumer FROM queued)
    INTO chunk_covered, woken;

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

-- Close an event's fan-out once its audience is used up and every chunk is done: status
-- 'done' and, for an explicit list, how many ids named nobody. False while work remains.
CREATE FUNCTION notify_finish(p_event uuid) RETURNS boolean
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

-- One worker's whole fan-out step, for a single caller (the inline path of notify_event(),
-- tests): claim a chunk, materialize it, and close the event when nothing is left.
-- Returns the recipients covered; fewer than `chunk` means the event is done.
CREATE FUNCTION notify_materialize(p_event uuid, chunk integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    claimed record;
    covered integer := 0;
BEGIN
    SELECT * INTO claimed FROM notify_claim_chunk(p_event, chunk);
    IF FOUND THEN
        covered := notify_materialize_chunk(p_event, claimed.lo, claimed.hi);
    END IF;
    IF covered < chunk THEN
        PERFORM notify_finish(p_event);
    END IF;
    RETURN covered;
END
$$;

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
CREATE FUNCTION notify_event(
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

-- Forget a user: contacts, devices, topics and preferences go; their notifications stay
-- as anonymous history (user id cleared), and rows not yet sent are suppressed.
CREATE FUNCTION erase_user(p_user text) RETURNS boolean
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
