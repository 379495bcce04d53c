-- Revision 0010 undone: the functions as revision 0009 left them.

-- Mirror the configuration's channels, categories and event types (JSON objects keyed by
-- name); entries no longer configured are disabled, never deleted.
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
            escalation_after_s, required_data, enabled, mode, digest_key, digest_actor,
            digest_window, digest_every_s, digest_at, digest_quiet_s, digest_max_wait_s,
            digest_max_items, digest_show_actors)
    SELECT key, value ->> 'category',
           ARRAY(SELECT jsonb_array_elements_text(value -> 'channels')),
           value ->> 'priority', (value ->> 'ttl_s')::float8,
           value ->> 'escalation_channel', (value ->> 'escalation_after_s')::float8,
           ARRAY(SELECT jsonb_array_elements_text(value -> 'required_data')), true,
           coalesce(value ->> 'mode', 'instant'), value ->> 'digest_key',
           value ->> 'digest_actor', value ->> 'digest_window',
           (value ->> 'digest_every_s')::float8, (value ->> 'digest_at')::time,
           (value ->> 'digest_quiet_s')::float8, (value ->> 'digest_max_wait_s')::float8,
           (value ->> 'digest_max_items')::integer, (value ->> 'digest_show_actors')::integer
    FROM jsonb_each(event_types)
    ON CONFLICT (name) DO UPDATE
        SET category = excluded.category, channels = excluded.channels,
            priority = excluded.priority, ttl_s = excluded.ttl_s,
            escalation_channel = excluded.escalation_channel,
            escalation_after_s = excluded.escalation_after_s,
            required_data = excluded.required_data, enabled = true, mode = excluded.mode,
            digest_key = excluded.digest_key, digest_actor = excluded.digest_actor,
            digest_window = excluded.digest_window, digest_every_s = excluded.digest_every_s,
            digest_at = excluded.digest_at, digest_quiet_s = excluded.digest_quiet_s,
            digest_max_wait_s = excluded.digest_max_wait_s,
            digest_max_items = excluded.digest_max_items,
            digest_show_actors = excluded.digest_show_actors, updated_at = now()
    WHERE (t.category, t.channels, t.priority, t.ttl_s, t.escalation_channel,
           t.escalation_after_s, t.required_data, t.enabled, t.mode, t.digest_key,
           t.digest_actor, t.digest_window, t.digest_every_s, t.digest_at, t.digest_quiet_s,
           t.digest_max_wait_s, t.digest_max_items, t.digest_show_actors)
          IS DISTINCT FROM (excluded.category, excluded.channels, excluded.priority,
                            excluded.ttl_s, excluded.escalation_channel,
                            excluded.escalation_after_s, excluded.required_data, true,
                            excluded.mode, excluded.digest_key, excluded.digest_actor,
                            excluded.digest_window, excluded.digest_every_s,
                            excluded.digest_at, excluded.digest_quiet_s,
                            excluded.digest_max_wait_s, excluded.digest_max_items,
                            excluded.digest_show_actors);
    UPDATE notify_event_types SET enabled = false, updated_at = now()
    WHERE enabled AND NOT event_types ? name;
$$;

DROP FUNCTION wake_dispatchers(text[], text, text);
-- Wakes the dispatchers of these consumers: one pending Procrastinate job per consumer
-- (its queueing lock), so a burst of writes adds at most one. The write path and
-- bin/redeliver both call it, so there is one definition of what a wake-up is. Consumers
-- are taken in order so concurrent callers cannot deadlock on the lock index.
CREATE FUNCTION wake_dispatchers(consumers text[], queue text, task text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args)
    SELECT queue, task, queue || ':' || c, jsonb_build_object('consumer', c)
    FROM (SELECT DISTINCT unnest(consumers) AS c) AS distinct_consumers
    ORDER BY c
    ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
$$;

DROP FUNCTION bucket_groups();
