-- name: get_preferences
-- returns: zero or one row (muted boolean, channels jsonb, quiet_hours jsonb): none when
--   there is no such user; NULLs when the user has never set preferences.
-- purpose: GET /v1/preferences and GET /v1/users/{id}/preferences: the user's own
--   switches, which the API merges with the configured defaults.
SELECT p.muted, p.channels, p.quiet_hours
FROM users AS u
LEFT JOIN preferences AS p ON p.user_id = u.id
WHERE u.id = %(user_id)s;

-- name: put_preferences
-- returns: zero or one row (user_id text): none when there is no such user (nothing
--   written)
-- purpose: PUT /v1/preferences and PUT /v1/users/{id}/preferences: replace the user's
--   switches (channels = {category: {channel: bool}}, quiet_hours = {channel: {start,
--   end}}), which the fan-out reads for every later notification.
INSERT INTO preferences AS p (user_id, muted, channels, quiet_hours)
SELECT u.id, %(muted)s, %(channels)s::jsonb, %(quiet_hours)s::jsonb
FROM users AS u
WHERE u.id = %(user_id)s
ON CONFLICT (user_id) DO UPDATE
    SET muted = excluded.muted, channels = excluded.channels,
        quiet_hours = excluded.quiet_hours, updated_at = now()
RETURNING p.user_id;
