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

-- name: materialize_step
-- returns: one row (covered integer): recipients covered by this step; fewer than
--   `chunk` means the event is fully materialized.
-- purpose: one caller's fan-out step: claim a chunk, materialize it, close the event when
--   nothing is left (notify_materialize()); tests and single-worker callers loop on it.
SELECT notify_materialize(%(event_id)s::uuid, %(chunk)s) AS covered;

-- name: claim_chunk
-- returns: zero or one row (lo text, hi text): the range of user ids (lo exclusive, hi
--   inclusive) this worker is to materialize; none when nothing is left to claim.
-- purpose: a fan-out worker's claim, committed on its own so that workers run side by side.
SELECT lo, hi FROM notify_claim_chunk(%(event_id)s::uuid, %(chunk)s);

-- name: materialize_range
-- returns: one row (covered integer): recipients materialized (0: another worker did it)
-- purpose: a fan-out worker materializes its claimed range, in its own transaction.
SELECT notify_materialize_chunk(%(event_id)s::uuid, %(lo)s, %(hi)s) AS covered;

-- name: finish_event
-- returns: one row (done boolean)
-- purpose: close an event's fan-out once every chunk is done (false while work remains).
SELECT notify_finish(%(event_id)s::uuid) AS done;
