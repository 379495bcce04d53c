-- Fire the due schedules (or only `only_schedule`) if `via` is the active backend: defer
-- each one's run as a `schedule.run` Procrastinate job, once per scheduled time. The
-- rows are claimed FOR UPDATE SKIP LOCKED and marked (fired_for), so concurrent ticks of
-- several dispatchers, or of pg_cron and a lagging dispatcher, defer a run once, and the
-- queueing lock keeps one job waiting per schedule. A run deferred `stale` ago that never
-- finished (its worker died) is deferred again: no Procrastinate `lock`, which a job left
-- 'doing' by a dead worker would hold for ever; the run's row (schedule_runs) and its
-- event's idempotency key keep it single. Returns the runs deferred.
CREATE FUNCTION fire_due_schedules(
    via text, only_schedule text DEFAULT NULL, stale interval DEFAULT '15 minutes'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    fired integer;
BEGIN
    IF NOT scheduler_active(via) THEN
        RETURN 0;
    END IF;
    WITH due AS (
        SELECT s.name FROM schedules AS s
        WHERE s.enabled AND s.next_run_at <= now()
          AND (only_schedule IS NULL OR s.name = only_schedule)
          AND (s.fired_for IS DISTINCT FROM s.next_run_at OR s.fired_at < now() - stale)
        ORDER BY s.name
        FOR UPDATE SKIP LOCKED
    ),
    marked AS (
        UPDATE schedules AS s SET fired_for = s.next_run_at, fired_at = now(), updated_at = now()
        FROM due AS d WHERE s.name = d.name
        RETURNING s.name, s.next_run_at
    ),
    deferred AS (
        INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args)
        SELECT 'schedule', 'schedule.run', 'schedule:' || m.name,
               jsonb_build_object('name', m.name, 'scheduled_for', m.next_run_at,
                                  'fired_by', via)
        FROM marked AS m
        ORDER BY m.name
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO fired FROM deferred;
    RETURN fired;
END
$$;
