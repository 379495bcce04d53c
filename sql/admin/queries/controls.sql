-- name: lock_consumer_control
-- returns: zero or one row (paused boolean, reason text, changed_by text, updated_at
--   timestamptz): the consumer's control row, locked; none = never paused.
-- purpose: the state before an operator's pause or resume (service/ops/controls.py), for its
--   audit row; the lock keeps two operators' changes from interleaving.
SELECT paused, reason, changed_by, updated_at
FROM consumer_controls
WHERE consumer = %(consumer)s
FOR UPDATE;

-- name: set_consumer_control
-- returns: one row (consumer text, paused boolean, reason text, changed_by text,
--   updated_at timestamptz): the control as it is now.
-- purpose: pause or resume one consumer (or channel): the claim queries skip a paused
--   one's rows, which stay pending.
INSERT INTO consumer_controls AS c (consumer, paused, changed_by, reason, updated_at)
VALUES (%(consumer)s, %(paused)s, %(actor)s, %(reason)s, now())
-- excluded.updated_at: on Citus (a reference table) SET takes no function but an immutable one.
ON CONFLICT (consumer) DO UPDATE
    SET paused = excluded.paused, changed_by = excluded.changed_by, reason = excluded.reason,
        updated_at = excluded.updated_at
RETURNING c.consumer, c.paused, c.reason, c.changed_by, c.updated_at;

-- name: list_consumer_controls
-- returns: rows (consumer text, paused boolean, reason text, changed_by text, updated_at
--   timestamptz), by consumer
-- purpose: which consumers are paused (and were), for the admin's consumers page.
SELECT consumer, paused, reason, changed_by, updated_at
FROM consumer_controls
ORDER BY consumer;

-- name: lock_provider_control
-- returns: zero or one row (enabled boolean, changed_by text, updated_at timestamptz): the
--   provider's switch, locked; none = enabled.
-- purpose: the state before an operator's provider switch, for its audit row.
SELECT enabled, changed_by, updated_at
FROM provider_controls
WHERE channel = %(channel)s AND provider = %(provider)s
FOR UPDATE;

-- name: set_provider_control
-- returns: one row (channel text, provider text, enabled boolean, changed_by text,
--   updated_at timestamptz): the switch as it is now.
-- purpose: switch an SMS or push provider off or on: the channel's claim hands the names
--   of those switched off to the transport, which skips them in its failover order.
INSERT INTO provider_controls AS p (channel, provider, enabled, changed_by, updated_at)
VALUES (%(channel)s, %(provider)s, %(enabled)s, %(actor)s, now())
-- excluded.updated_at: as set_consumer_control's.
ON CONFLICT (channel, provider) DO UPDATE
    SET enabled = excluded.enabled, changed_by = excluded.changed_by,
        updated_at = excluded.updated_at
RETURNING p.channel, p.provider, p.enabled, p.changed_by, p.updated_at;

-- name: list_provider_controls
-- returns: rows (channel text, provider text, enabled boolean, changed_by text, updated_at
--   timestamptz), by channel and provider
-- purpose: which providers are switched off (and were), for the admin's channels page.
SELECT channel, provider, enabled, changed_by, updated_at
FROM provider_controls
ORDER BY channel, provider;

-- name: wake_consumers
-- returns: one row (nothing useful)
-- purpose: wake the dispatchers of these consumers now (a resumed consumer's rows are
--   due already), instead of at their next sweep.
SELECT wake_dispatchers(%(consumers)s::text[], %(wake_queue)s::text, %(wake_task)s::text);
