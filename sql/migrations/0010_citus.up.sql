-- Revision 0010: functions rewritten so that Citus plans them too (see the revision).

-- Mirror the configuration's channels, categories and event types (JSON objects keyed by
-- name); entries no longer configured are disabled, never deleted.
CREATE OR REPLACE FUNCTION sync_notify_config(channels jsonb, categories jsonb, event_types jsonb)
RETURNS void
-- PL/pgSQL, not SQL: Citus plans no SQL function's parameters. On a cluster these are
-- reference tables: an INSERT's rows come from a MATERIALIZED CTE (worked out on the
-- coordinator, where the parameters are) and ON CONFLICT's SET takes no function but an
-- immutable one, hence excluded.updated_at (`at`, now()).
LANGUAGE plpgsql AS $$
DECLARE
    at timestamptz := now();
BEGIN
    -- One sync at a time (the API and every dispatcher sync at start): on a cluster two
    -- concurrent writes of these reference tables can deadlock on Citus' own shard locks.
    -- The function runs on the coordinator, so the lock is one for every caller.
    PERFORM pg_advisory_xact_lock(hashtext('mark-notify:notify-config-sync'));
    WITH given AS MATERIALIZED (SELECT key, value, at AS stamp FROM jsonb_each(channels))
    INSERT INTO notify_channels AS c (name, kind, enabled, updated_at)
    SELECT key, value ->> 'kind', true, stamp FROM given
    ON CONFLICT (name) DO UPDATE
        SET kind = excluded.kind, enabled = true, updated_at = excluded.updated_at
    WHERE (c.kind, c.enabled) IS DISTINCT FROM (excluded.kind, true);
    UPDATE notify_channels SET enabled = false, updated_at = at
    WHERE enabled AND NOT channels ? name;

    WITH given AS MATERIALIZED (SELECT key, value, at AS stamp FROM jsonb_each(categories))
    INSERT INTO notify_categories AS c (name, transactional, defaults, enabled, updated_at)
    SELECT key, (value ->> 'transactional')::boolean, coalesce(value -> 'defaults', '{}'), true,
           stamp
    FROM given
    ON CONFLICT (name) DO UPDATE
        SET transactional = excluded.transactional, defaults = excluded.defaults,
            enabled = true, updated_at = excluded.updated_at
    WHERE (c.transactional, c.defaults, c.enabled)
          IS DISTINCT FROM (excluded.transactional, excluded.defaults, true);
    UPDATE notify_categories SET enabled = false, updated_at = at
    WHERE enabled AND NOT categories ? name;

    WITH given AS MATERIALIZED (SELECT key, value, at AS stamp FROM jsonb_each(event_types))
    INSERT INTO notify_event_types AS t
           (name, category, channels, priority, ttl_s, escalation_channel,
            escalation_after_s, required_data, enabled, mode, digest_key, digest_actor,
            digest_window, digest_every_s, digest_at, digest_quiet_s, digest_max_wait_s,
            digest_max_items, digest_show_actors, updated_at)
    SELECT key, value ->> 'category',
           ARRAY(SELECT jsonb_array_elements_text(value -> 'channels')),
           value ->> 'priority', (value ->> 'ttl_s')::float8,
           value ->> 'escalation_channel', (value ->> 'escalation_after_s')::float8,
           ARRAY(SELECT jsonb_array_elements_text(value -> 'required_data')), true,
           coalesce(value ->> 'mode', 'instant'), value ->> 'digest_key',
           value ->> 'digest_actor', value ->> 'digest_window',
           (value ->> 'digest_every_s')::float8, (value ->> 'digest_at')::time,
           (value ->> 'digest_quiet_s')::float8, (value ->> 'digest_max_wait_s')::float8,
           (value ->> 'digest_max_items')::integer, (value ->> 'digest_show_actors')::integer,
           stamp
    FROM given
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
            digest_show_actors = excluded.digest_show_actors,
            updated_at = excluded.updated_at
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
    UPDATE notify_event_types SET enabled = false, updated_at = at
    WHERE enabled AND NOT event_types ? name;
END
$$;

DROP FUNCTION wake_dispatchers(text[], text, text);
-- Wakes the dispatchers of these consumers: one pending Procrastinate job per consumer
-- (its queueing lock), so a burst of writes adds at most one. The write path and
-- bin/redeliver both call it, so there is one definition of what a wake-up is. Consumers
-- are taken in order so concurrent callers cannot deadlock on the lock index. Returns the
-- jobs added (not void: Citus keeps a statement's CTE results in a table, and a column
-- cannot be void).
CREATE FUNCTION wake_dispatchers(consumers text[], queue text, task text) RETURNS integer
LANGUAGE sql AS $$
    WITH deferred AS (
        INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args)
        SELECT queue, task, queue || ':' || c, jsonb_build_object('consumer', c)
        FROM (SELECT DISTINCT unnest(consumers) AS c) AS distinct_consumers
        ORDER BY c
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer FROM deferred
$$;

-- The buckets grouped by where their rows live, each group an array in bucket order: on a
-- Citus cluster one group per shard of outbox (a claim names the buckets of one group, so
-- Citus routes it to that shard: FOR UPDATE SKIP LOCKED is refused across shards); on one
-- PostgreSQL a single group of every bucket. Dispatchers read it at start
-- (dispatcher/bucket_leases.py). PL/pgSQL plans a statement when it first runs, so the
-- Citus catalog is read only where it exists.
CREATE FUNCTION bucket_groups() RETURNS SETOF smallint[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    distributed boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM pg_dist_partition
                                  WHERE logicalrelid = 'outbox'::regclass)$q$
        INTO distributed;
    END IF;
    IF distributed THEN
        RETURN QUERY EXECUTE $q$
            SELECT array_agg(b::smallint ORDER BY b)
            FROM generate_series(0, bucket_count() - 1) AS b
            GROUP BY get_shard_id_for_distribution_column('outbox', b::smallint)
            ORDER BY min(b)$q$;
    ELSE
        RETURN QUERY SELECT array_agg(b::smallint ORDER BY b)
                     FROM generate_series(0, bucket_count() - 1) AS b;
    END IF;
END
$$;
