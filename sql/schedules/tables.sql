-- Schedules (service/schedule/).

-- Periodic events (docs/scheduler.md). A schedule posts an event through notify_event()
-- at the times its cron expression names in its time zone. Python (croniter) keeps
-- next_run_at; the active backend (scheduler_state) calls fire_due_schedules() every
-- minute, which defers the run as a Procrastinate job that a dispatcher executes (a run
-- may fetch a URL, which SQL cannot). origin 'config': declared in the config file, which
-- the row follows at every start-up; 'cli': made by bin/schedules, left alone by start-ups.
CREATE TABLE schedules (
    name         text        PRIMARY KEY,
    cron         text        NOT NULL,
    timezone     text        NOT NULL DEFAULT 'UTC',
    event_type   text        NOT NULL,
    -- notify_event()'s recipients: {"topic": ...}, {"all": true} or {"user_ids": [...]}.
    audience     jsonb       NOT NULL,
    -- {"kind": "static", "data"}, {"kind": "sql", "query", "shape"}, {"kind": "http", "url",
    -- "headers"}.
    source       jsonb       NOT NULL,
    enabled      boolean     NOT NULL DEFAULT true,
    origin       text        NOT NULL CHECK (origin IN ('config', 'cli')),
    description  text        NOT NULL DEFAULT '',
    -- The next scheduled time (NULL while disabled).
    next_run_at  timestamptz,
    -- The next_run_at whose run has been deferred, and when: a tick defers it once.
    fired_for    timestamptz,
    fired_at     timestamptz,
    -- The last finished run: its scheduled time, outcome and error.
    last_run_at  timestamptz,
    last_outcome text        CHECK (last_outcome IN ('sent', 'duplicate', 'failed')),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled;
CREATE INDEX schedules_updated_at_idx ON schedules (updated_at);

-- One row per run of a schedule at one scheduled time (a manual run: the second it was
-- asked for). Its event's idempotency key is 'schedule:<name>:<scheduled_for, ISO, UTC>',
-- so a run made twice sends nothing twice. Runs outlive their schedule, as history.
CREATE TABLE schedule_runs (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule      text        NOT NULL,
    scheduled_for timestamptz NOT NULL,
    fired_by      text        NOT NULL CHECK (fired_by IN ('pg_cron', 'procrastinate', 'manual')),
    outcome       text        NOT NULL DEFAULT 'running'
                              CHECK (outcome IN ('running', 'sent', 'duplicate', 'failed')),
    -- Attempts at the data source (a failing one is retried with backoff, a few times).
    attempts      integer     NOT NULL DEFAULT 0,
    error         text,
    event_id      uuid,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schedule, scheduled_for)
);
CREATE INDEX schedule_runs_updated_at_idx ON schedule_runs (updated_at);

-- The backend that runs scheduled work (pg_cron or the dispatchers' Procrastinate
-- periodic tasks), as the last start-up or `bin/schedules sync` chose it; one row. Only
-- that backend's ticks fire schedules and flush digests, so exactly one is active even
-- while dispatchers of two minds run side by side.
CREATE TABLE scheduler_state (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    backend    text        NOT NULL CHECK (backend IN ('pg_cron', 'procrastinate')),
    detail     text        NOT NULL,
    chosen_by  text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
