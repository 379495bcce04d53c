-- name: list_schedules
-- returns: rows (name, cron, timezone, event_type text, audience, source jsonb, enabled
--   boolean, origin, description text, next_run_at, fired_for, last_run_at timestamptz,
--   last_outcome, last_error text), by name
-- purpose: bin/schedules list and status; the rows the pg_cron backend keeps jobs for.
SELECT name, cron, timezone, event_type, audience, source, enabled, origin, description,
       next_run_at, fired_for, last_run_at, last_outcome, last_error
FROM schedules
ORDER BY name;

-- name: get_schedule
-- returns: zero or one row, the columns of list_schedules
-- purpose: one schedule, for a run and for bin/schedules set.
SELECT name, cron, timezone, event_type, audience, source, enabled, origin, description,
       next_run_at, fired_for, last_run_at, last_outcome, last_error
FROM schedules
WHERE name = %(name)s;

-- name: insert_schedule
-- returns: zero or one row (name text): none when the name is taken
-- purpose: bin/schedules add: a schedule of origin 'cli', which start-ups leave alone.
INSERT INTO schedules (name, cron, timezone, event_type, audience, source, enabled, origin,
                       description, next_run_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(event_type)s, %(audience)s::jsonb,
        %(source)s::jsonb, %(enabled)s, 'cli', %(description)s,
        CASE WHEN %(enabled)s THEN %(next_run_at)s::timestamptz END)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: update_schedule
-- returns: zero or one row (name text): none unless a CLI-made schedule of that name exists
-- purpose: bin/schedules set, enable and disable: the whole definition as given. A change
--   of timing (cron, time zone, enabled) moves next_run_at to the one computed for the new
--   timing and forgets a deferred run's mark; otherwise the schedule keeps its time.
UPDATE schedules AS s
SET cron = %(cron)s, timezone = %(timezone)s, event_type = %(event_type)s,
    audience = %(audience)s::jsonb, source = %(source)s::jsonb, enabled = %(enabled)s,
    description = %(description)s,
    next_run_at = CASE
        WHEN (s.cron, s.timezone, s.enabled) IS DISTINCT FROM (%(cron)s, %(timezone)s, %(enabled)s)
            THEN CASE WHEN %(enabled)s THEN %(next_run_at)s::timestamptz END
        ELSE s.next_run_at END,
    fired_for = CASE
        WHEN (s.cron, s.timezone, s.enabled) IS DISTINCT FROM (%(cron)s, %(timezone)s, %(enabled)s)
            THEN NULL
        ELSE s.fired_for END,
    updated_at = now()
WHERE s.name = %(name)s AND s.origin = 'cli'
RETURNING s.name;

-- name: delete_schedule
-- returns: zero or one row (name text): none unless a CLI-made schedule of that name existed
-- purpose: bin/schedules remove. Its runs stay in schedule_runs, as history.
DELETE FROM schedules WHERE name = %(name)s AND origin = 'cli' RETURNING name;

-- name: sync_config_schedules
-- returns: rows (name text, change text): 'added', 'changed', 'taken over' (a CLI-made row
--   the file now declares) or 'removed', by name
-- purpose: start-up and bin/schedules sync: the config file's [schedules.<name>] mirrored
--   into the table (sql/schedules/functions/sync_config_schedules.sql).
SELECT s.name, s.change FROM sync_config_schedules(%(declared)s::jsonb) AS s;

-- name: fire_due_schedules
-- returns: one row (fire_due_schedules integer): the runs deferred
-- purpose: the Procrastinate backend's tick (and the command of pg_cron's job per
--   schedule, cron_fire_schedule): defer the runs of due schedules, once per scheduled time,
--   if `via` is the active backend.
SELECT fire_due_schedules(%(via)s);

-- name: recent_schedule_runs
-- returns: rows (schedule text, scheduled_for timestamptz, fired_by, outcome text,
--   attempts integer, error text, event_id uuid, started_at, finished_at timestamptz),
--   newest first
-- purpose: bin/schedules status: what the last runs did.
SELECT schedule, scheduled_for, fired_by, outcome, attempts, error, event_id, started_at,
       finished_at
FROM schedule_runs
ORDER BY started_at DESC, id DESC
LIMIT %(limit)s;

-- name: begin_schedule_run
-- returns: zero or one row (id bigint): none when this run was made already (sent or
--   duplicate) or another worker is making it now
-- purpose: a run's start (service/schedule/runner.py). A failed run of the same time is
--   made again; one left 'running' for `stale` (its worker died) is taken over.
INSERT INTO schedule_runs AS r (schedule, scheduled_for, fired_by)
VALUES (%(name)s, %(scheduled_for)s, %(fired_by)s)
ON CONFLICT (schedule, scheduled_for) DO UPDATE
    SET outcome = 'running', fired_by = excluded.fired_by, attempts = 0, error = NULL,
        event_id = NULL, started_at = now(), finished_at = NULL, updated_at = now()
    WHERE r.outcome = 'failed'
       OR (r.outcome = 'running' AND r.started_at < now() - %(stale)s::interval)
RETURNING r.id;

-- name: record_schedule_attempt
-- returns: nothing
-- purpose: a run's attempt at its data source failed: how many so far, and why (shown by
--   bin/schedules status while the run retries).
UPDATE schedule_runs
SET attempts = %(attempts)s, error = %(error)s, updated_at = now()
WHERE schedule = %(name)s AND scheduled_for = %(scheduled_for)s;

-- name: post_schedule_event
-- returns: one row (event_id uuid, status text, created boolean): created = false when the
--   idempotency key had been used (the run's event exists: nothing is sent twice)
-- purpose: a run's event, through the intake every event takes (notify_event()).
SELECT e.event_id, e.status, e.created
FROM notify_event(%(producer)s, %(idempotency_key)s, %(event_type)s, %(recipients)s::jsonb,
                  %(data)s::jsonb) AS e;

-- name: finish_schedule_run
-- returns: nothing
-- purpose: a run's end: its outcome, and the schedule's next time (finish_schedule_run()).
SELECT finish_schedule_run(%(name)s, %(scheduled_for)s, %(outcome)s, %(error)s,
                           %(attempts)s, %(event_id)s, %(next_run_at)s);

-- name: source_read_only
-- returns: nothing
-- purpose: the first statement of a SQL source's transaction: the query cannot write.
SET TRANSACTION READ ONLY;

-- name: source_statement_timeout
-- returns: one row (set_config text)
-- purpose: a SQL source's query is cancelled after this long (milliseconds, as text); for
--   this transaction only.
SELECT set_config('statement_timeout', %(timeout_ms)s, true);

-- name: scheduler_state
-- returns: zero or one row (backend, detail, chosen_by text, updated_at timestamptz)
-- purpose: the active backend, for /readyz, bin/schedules status and the dispatchers'
--   Procrastinate ticks.
SELECT backend, detail, chosen_by, updated_at FROM scheduler_state;

-- name: save_scheduler_state
-- returns: nothing
-- purpose: a start-up or bin/schedules sync records the backend it chose.
INSERT INTO scheduler_state AS s (id, backend, detail, chosen_by)
VALUES (true, %(backend)s, %(detail)s, %(chosen_by)s)
ON CONFLICT (id) DO UPDATE
    SET backend = excluded.backend, detail = excluded.detail, chosen_by = excluded.chosen_by,
        updated_at = now();

-- name: scheduler_sync_lock
-- returns: one row (pg_advisory_xact_lock void)
-- purpose: one sync at a time per database (start-ups of several dispatchers, bin/schedules),
--   held to the end of the sync's transaction, so two never reconcile pg_cron jobs at once.
SELECT pg_advisory_xact_lock(hashtext('mark-notify:scheduler-sync'));

-- name: pg_cron_setting
-- returns: one row (cron_database text, this_database text): cron_database is NULL unless
--   pg_cron is preloaded (shared_preload_libraries)
-- purpose: where pg_cron keeps its jobs, asked from our database. The setting is for
--   superusers and members of pg_read_all_settings only: any other role gets
--   InsufficientPrivilege (SQLSTATE 42501), which proves pg_cron is preloaded.
SELECT current_setting('cron.database_name', true), current_database();

-- name: pg_cron_extension
-- returns: zero or one row (version text, in_database, usage, execute boolean): none when
--   the extension is not created; in_database: cron.schedule_in_database() exists
--   (pg_cron >= 1.4); usage: our role has USAGE on schema cron; execute: it may call
--   cron.schedule_in_database() (pg_cron 1.4 revokes it from PUBLIC)
-- purpose: backend detection, asked in pg_cron's database. Read from the catalogs, which
--   any role may read (to_regprocedure() fails without USAGE on the schema).
SELECT e.extversion,
       f.oid IS NOT NULL,
       coalesce(has_schema_privilege(n.oid, 'USAGE'), false),
       coalesce(has_function_privilege(f.oid, 'EXECUTE'), false)
FROM pg_extension AS e
LEFT JOIN pg_namespace AS n ON n.nspname = 'cron'
-- (text, text, text, text, text, boolean): the built-in types' fixed oids.
LEFT JOIN pg_proc AS f
    ON f.pronamespace = n.oid AND f.proname = 'schedule_in_database'
   AND f.proargtypes = '25 25 25 25 25 16'::oidvector
WHERE e.extname = 'pg_cron';

-- name: cron_jobs
-- returns: rows (jobid bigint, jobname text, schedule text, command text, active boolean)
-- purpose: our pg_cron jobs for one database (names starting with %(prefix)s), asked in
--   pg_cron's database.
SELECT jobid, jobname::text, schedule, command, active
FROM cron.job
WHERE database = %(database)s AND jobname LIKE %(prefix)s
ORDER BY jobname;

-- name: cron_schedule
-- returns: one row (schedule_in_database bigint): the job id
-- purpose: add or replace (by name) one of our pg_cron jobs, run in our database.
SELECT cron.schedule_in_database(%(job)s, %(schedule)s, %(command)s, %(database)s);

-- name: cron_unschedule
-- returns: zero or one row (unschedule boolean)
-- purpose: remove one of our pg_cron jobs (a schedule removed or disabled, or another
--   backend chosen).
SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid = %(jobid)s;

-- name: cron_unschedule_orphans
-- returns: rows (jobname text, database text): the jobs removed
-- purpose: our jobs whose database was dropped would fail every minute for ever; each sync
--   removes them.
WITH orphans AS MATERIALIZED (
    SELECT j.jobid, j.jobname::text AS jobname, j.database
    FROM cron.job AS j
    WHERE j.jobname LIKE %(prefix)s
      AND NOT EXISTS (SELECT 1 FROM pg_database AS d WHERE d.datname = j.database)
)
SELECT o.jobname, o.database FROM orphans AS o WHERE cron.unschedule(o.jobid);

-- name: cron_last_runs
-- returns: rows (jobname text, schedule text, active boolean, status text,
--   return_message text, start_time, end_time timestamptz, runs bigint): each of our jobs
--   for one database with its last run in cron.job_run_details (NULLs: none yet)
-- purpose: bin/schedules status under pg_cron.
SELECT j.jobname::text, j.schedule, j.active, last.status, last.return_message,
       last.start_time, last.end_time,
       (SELECT count(*) FROM cron.job_run_details AS r WHERE r.jobid = j.jobid)
FROM cron.job AS j
LEFT JOIN LATERAL (
    SELECT r.status, r.return_message, r.start_time, r.end_time
    FROM cron.job_run_details AS r
    WHERE r.jobid = j.jobid
    ORDER BY r.runid DESC
    LIMIT 1
) AS last ON true
WHERE j.database = %(database)s AND j.jobname LIKE %(prefix)s
ORDER BY j.jobname;

-- name: cron_fire_schedule
-- returns: one row (fire_due_schedules integer)
-- purpose: the command of a schedule's pg_cron job (every minute, in our database): fire it
--   if due. Rendered with its parameters into the job's text (psycopg's mogrify).
SELECT fire_due_schedules('pg_cron', %(name)s);

-- name: cron_flush_digests
-- returns: zero or one row (flush_digests integer)
-- purpose: the command of the digest flush's pg_cron job (every minute, in our database),
--   a no-op unless pg_cron is the active backend.
SELECT flush_digests() WHERE scheduler_active('pg_cron');

-- name: schedule_event_types
-- returns: rows (name text): the enabled event types, by name
-- purpose: bin/schedules add and set (and the admin's schedule form) refuse an event type
--   the catalog (notify_event_types, mirrored from the config at start-up) does not have,
--   naming those it has.
SELECT name FROM notify_event_types WHERE enabled ORDER BY name;
