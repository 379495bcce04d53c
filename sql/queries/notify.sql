-- name: sync_notify_config
-- returns: nothing
-- purpose: mirror the configured channels, categories and event types (JSON objects keyed
--   by name, built by service/notify/catalog.py) into the notify_* tables that the SQL
--   fan-out reads; a no-op when nothing changed.
SELECT sync_notify_config(%(channels)s::jsonb, %(categories)s::jsonb, %(event_types)s::jsonb);

-- name: accept_event
-- returns: one row (event_id uuid, status text, created boolean): the event, and false
--   when it is a repeat of (producer, idempotency_key), which then wrote nothing.
-- purpose: POST /v1/events: store the event and fan it out (an explicit list at once, a
--   topic or everyone by the materialize task), through the same notify_event() that
--   producers sharing the database call.
SELECT event_id, status, created
FROM notify_event(%(producer)s, %(idempotency_key)s, %(type)s, %(recipients)s::jsonb,
                  %(data)s::jsonb, %(send_at)s::timestamptz, %(chunk)s);

-- name: materialize_chunk
-- returns: one row (covered integer): recipients covered by this chunk; fewer than
--   `chunk` means the event is fully materialized.
-- purpose: the notify.materialize task's step: one chunk of a large audience as
--   notifications and outbox rows, in its own transaction.
SELECT notify_materialize(%(event_id)s::uuid, %(chunk)s) AS covered;
