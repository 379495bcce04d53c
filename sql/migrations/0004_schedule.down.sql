-- Revision 0004 downgrade: drops scheduled work (in the reverse order of the up file).

-- == retention ==
DROP PROCEDURE IF EXISTS prune_retention;
DROP FUNCTION IF EXISTS prune_retention_batch;
DROP INDEX IF EXISTS outbox_finished_idx;

-- == schedules ==
DROP FUNCTION IF EXISTS finish_schedule_run(text, timestamptz, text, text, integer, uuid,
                                             timestamptz);
DROP FUNCTION IF EXISTS fire_due_schedules(text, text, interval);
DROP FUNCTION IF EXISTS sync_config_schedules(jsonb);
DROP FUNCTION IF EXISTS scheduler_active(text);
DROP TABLE IF EXISTS scheduler_state;
DROP TABLE IF EXISTS schedule_runs;
DROP TABLE IF EXISTS schedules;

-- == digests ==
DROP FUNCTION IF EXISTS flush_digests();
DROP VIEW IF EXISTS open_digests;
DROP FUNCTION IF EXISTS digest_due_at(text, float8, time, float8, float8, integer, text,
                                      timestamptz, timestamptz, bigint);
-- The fan-out and the catalog as revision 0003 made them, before what they read goes.
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
DROP FUNCTION IF EXISTS notify_send_at(timestamptz, text, jsonb);
DROP FUNCTION IF EXISTS notify_quiet_hours(boolean, text, jsonb, text);
DROP FUNCTION IF EXISTS notify_suppression(boolean, boolean, jsonb, jsonb, text, text, text,
                                           text, text, boolean);
DROP FUNCTION IF EXISTS notify_type_routes(text);
ALTER TABLE notify_event_types
    DROP COLUMN mode, DROP COLUMN digest_key, DROP COLUMN digest_actor,
    DROP COLUMN digest_window, DROP COLUMN digest_every_s, DROP COLUMN digest_at,
    DROP COLUMN digest_quiet_s, DROP COLUMN digest_max_wait_s, DROP COLUMN digest_max_items,
    DROP COLUMN digest_show_actors;
ALTER TABLE notifications DROP COLUMN data;
DROP TABLE IF EXISTS digest_items;
