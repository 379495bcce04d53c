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
