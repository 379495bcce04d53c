-- Mirror the config file's schedules (a JSON object keyed by name, each with its
-- definition and the next_run_at Python computed for it): rows the file declares are
-- added or made to follow it (a CLI-made row of the same name becomes the file's), and
-- config rows the file no longer declares are removed; CLI-made rows are left alone.
-- A row whose timing (cron, time zone, enabled) is unchanged keeps its next_run_at, so a
-- run missed while nothing ran is still made. Returns what changed.
CREATE FUNCTION sync_config_schedules(declared jsonb)
RETURNS TABLE (name text, change text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH wanted AS (
        SELECT key AS name, value ->> 'cron' AS cron, value ->> 'timezone' AS timezone,
               value ->> 'event_type' AS event_type, value -> 'audience' AS audience,
               value -> 'source' AS source, (value ->> 'enabled')::boolean AS enabled,
               value ->> 'description' AS description,
               (value ->> 'next_run_at')::timestamptz AS next_run_at
        FROM jsonb_each(declared)
    ),
    before AS (
        SELECT s.name, s.origin FROM schedules AS s WHERE s.name IN (SELECT w.name FROM wanted AS w)
    ),
    upserted AS (
        INSERT INTO schedules AS s (name, cron, timezone, event_type, audience, source,
                                    enabled, origin, description, next_run_at)
        SELECT w.name, w.cron, w.timezone, w.event_type, w.audience, w.source, w.enabled,
               'config', w.description, CASE WHEN w.enabled THEN w.next_run_at END
        FROM wanted AS w
        ORDER BY w.name
        ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
            SET cron = excluded.cron, timezone = excluded.timezone,
                event_type = excluded.event_type, audience = excluded.audience,
                source = excluded.source, enabled = excluded.enabled, origin = 'config',
                description = excluded.description,
                next_run_at = CASE
                    WHEN (s.cron, s.timezone, s.enabled)
                         IS NOT DISTINCT FROM (excluded.cron, excluded.timezone, excluded.enabled)
                         AND (s.next_run_at IS NOT NULL OR NOT s.enabled)
                        THEN s.next_run_at
                    ELSE excluded.next_run_at END,
                fired_for = CASE
                    WHEN (s.cron, s.timezone, s.enabled)
                         IS NOT DISTINCT FROM (excluded.cron, excluded.timezone, excluded.enabled)
                        THEN s.fired_for END,
                updated_at = now()
            WHERE (s.cron, s.timezone, s.event_type, s.audience, s.source, s.enabled,
                   s.origin, s.description)
                  IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.event_type,
                                    excluded.audience, excluded.source, excluded.enabled,
                                    'config', excluded.description)
               OR (s.enabled AND s.next_run_at IS NULL)
        RETURNING s.name
    ),
    removed AS (
        DELETE FROM schedules AS s
        WHERE s.origin = 'config' AND NOT declared ? s.name
        RETURNING s.name
    )
    SELECT u.name, CASE WHEN b.name IS NULL THEN 'added'
                        WHEN b.origin = 'cli' THEN 'taken over'
                        ELSE 'changed' END
    FROM upserted AS u LEFT JOIN before AS b ON b.name = u.name
    UNION ALL
    SELECT r.name, 'removed' FROM removed AS r
    ORDER BY 1;
END
$$;
