-- name: get_preferences
-- returns: zero or one row (preferences json): none when there is no such user; else
--   the effective preferences (notify_effective_preferences()) over `categories` and
--   `channels`, the configured defaults where the user has set nothing.
-- purpose: GET /v1/preferences, GET /v1/users/{id}/preferences and the admin's user page:
--   the user's switches merged with the configured defaults by the fan-out's own rule.
SELECT notify_effective_preferences(p.muted, p.channels, p.quiet_hours,
                                    %(categories)s::json, %(channels)s::text[]) AS preferences
FROM users AS u
LEFT JOIN preferences AS p ON p.user_id = u.id
WHERE u.id = %(user_id)s;

-- name: put_preferences
-- returns: zero or one row (preferences json): none when there is no such user (nothing
--   written); else the effective preferences now, as get_preferences answers them.
-- purpose: PUT /v1/preferences and PUT /v1/users/{id}/preferences: replace the user's
--   switches (switches = {category: {channel: bool}}, quiet_hours = {channel: {start,
--   end}}), which the fan-out reads for every later notification.
INSERT INTO preferences AS p (user_id, muted, channels, quiet_hours)
SELECT u.id, %(muted)s, %(switches)s::jsonb, %(quiet_hours)s::jsonb
FROM users AS u
WHERE u.id = %(user_id)s
ON CONFLICT (user_id) DO UPDATE
    SET muted = excluded.muted, channels = excluded.channels,
        -- excluded.updated_at is now(): Citus takes no function but an immutable one here.
        quiet_hours = excluded.quiet_hours, updated_at = excluded.updated_at
RETURNING notify_effective_preferences(p.muted, p.channels, p.quiet_hours,
                                       %(categories)s::json, %(channels)s::text[]) AS preferences;

-- name: preference_center_user
-- returns: zero or one row (locale text, timezone text, switches jsonb): none when there
--   is no such user; else the user's locale and time zone (NULL when unset) and the
--   switches they have stored ({} when none).
-- purpose: the preference center (service/notify/preference_center.py): the page's
--   language and the time zone its quiet hours are in; on a save, the stored switches
--   that the boxes left as shown keep, so a default the user never touched stays a
--   default (the effective switches themselves come from get_preferences).
SELECT u.locale, u.timezone, coalesce(p.channels, '{}'::jsonb) AS switches
FROM users AS u
LEFT JOIN preferences AS p ON p.user_id = u.id
WHERE u.id = %(user_id)s;
