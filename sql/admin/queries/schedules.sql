-- name: admin_schedules_last_runs
-- returns: rows (schedule text, scheduled_for timestamptz, fired_by, outcome text,
--   attempts integer, error text, event_id uuid), newest first within each schedule: the
--   last `per_schedule` runs of every schedule in the table
-- purpose: the admin's list of schedules: each one's last runs and their outcome, read
--   through schedule_runs' unique (schedule, scheduled_for) index.
SELECT s.name AS schedule, r.scheduled_for, r.fired_by, r.outcome, r.attempts, r.error,
       r.event_id
FROM schedules AS s
CROSS JOIN LATERAL (
    SELECT sr.scheduled_for, sr.fired_by, sr.outcome, sr.attempts, sr.error, sr.event_id
    FROM schedule_runs AS sr
    WHERE sr.schedule = s.name
    ORDER BY sr.scheduled_for DESC
    LIMIT %(per_schedule)s
) AS r
ORDER BY s.name, r.scheduled_for DESC;

-- name: admin_schedule_runs
-- returns: rows (scheduled_for timestamptz, fired_by, outcome text, attempts integer,
--   error text, event_id uuid, started_at, finished_at timestamptz), newest first
-- purpose: a schedule's page in the admin: its run history (also of a schedule since
--   removed, whose runs are kept).
SELECT scheduled_for, fired_by, outcome, attempts, error, event_id, started_at, finished_at
FROM schedule_runs
WHERE schedule = %(name)s
ORDER BY scheduled_for DESC
LIMIT %(limit)s;
