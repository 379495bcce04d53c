-- The end of a run of `p_schedule` for `p_scheduled_for`: the run's outcome (unless
-- p_outcome is NULL: the run had already been made), and, if the scheduler fired it, the
-- schedule moves on to `p_next` (croniter's next time after now, from Python). A manual
-- run, or one whose schedule was changed meanwhile, leaves next_run_at alone.
CREATE FUNCTION finish_schedule_run(
    p_schedule text, p_scheduled_for timestamptz, p_outcome text, p_error text,
    p_attempts integer, p_event uuid, p_next timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_outcome IS NOT NULL THEN
        UPDATE schedule_runs AS r
        SET outcome = p_outcome, error = p_error, attempts = p_attempts, event_id = p_event,
            finished_at = now(), updated_at = now()
        WHERE r.schedule = p_schedule AND r.scheduled_for = p_scheduled_for;
    END IF;
    UPDATE schedules AS s
    SET last_run_at = CASE WHEN p_outcome IS NULL THEN s.last_run_at ELSE p_scheduled_for END,
        last_outcome = coalesce(p_outcome, s.last_outcome),
        last_error = CASE WHEN p_outcome IS NULL THEN s.last_error ELSE p_error END,
        next_run_at = CASE WHEN s.fired_for = p_scheduled_for AND s.enabled
                           THEN p_next ELSE s.next_run_at END,
        fired_for = CASE WHEN s.fired_for = p_scheduled_for THEN NULL ELSE s.fired_for END,
        updated_at = now()
    WHERE s.name = p_schedule;
END
$$;
