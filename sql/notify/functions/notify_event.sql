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
                -- now(), as a default: Citus takes no function but an immutable one here.
                updated_at = excluded.updated_at;
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
