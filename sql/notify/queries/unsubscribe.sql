-- name: unsubscribe_channel
-- returns: one row (user_exists boolean, changed boolean): whether the user exists, and
--   whether this call switched the channel off (false: it was off already, or no user).
-- purpose: one-click unsubscribe (service/notify/unsubscribe.py): switch one channel of
--   one category off for one user, keeping every other preference, creating the
--   preferences row if the user has none. Nothing is written for a user that no longer
--   exists, nor when the switch is off already (updated_at stays as it was).
WITH target AS (
    SELECT id FROM users WHERE id = %(user_id)s
),
upserted AS (
    INSERT INTO preferences AS p (user_id, channels)
    SELECT id, jsonb_build_object(%(category)s::text,
                                  jsonb_build_object(%(channel)s::text, false))
    FROM target
    ON CONFLICT (user_id) DO UPDATE
    SET channels = jsonb_set(
            p.channels,
            ARRAY[%(category)s::text],
            -- A category entry that is not an object carries no switches worth keeping.
            CASE WHEN jsonb_typeof(p.channels -> %(category)s::text) = 'object'
                 THEN p.channels -> %(category)s::text ELSE '{}'::jsonb END
                || jsonb_build_object(%(channel)s::text, false)),
        -- excluded.updated_at is now(): Citus takes no function but an immutable one here.
        updated_at = excluded.updated_at
    WHERE (p.channels -> %(category)s::text ->> %(channel)s::text) IS DISTINCT FROM 'false'
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM target) AS user_exists,
       EXISTS (SELECT 1 FROM upserted) AS changed;
