-- 0008_preference_rule down: notify_preference_on, notify_suppression, notify_effective_preferences, as 0007_tracing left them.

DROP FUNCTION IF EXISTS notify_effective_preferences(muted boolean, switches jsonb, quiet jsonb, categories json, channels text[]);

-- From sql/migrations/0004_schedule.up.sql.
-- Why one channel of a notification is not sent ('muted', 'preference', 'no_contact'), or
-- NULL when it is: the user's mute and category switches (not for transactional
-- categories), then the contact the channel's kind needs. has_device is evaluated only
-- when the rules get that far (a push channel whose other rules passed).
CREATE OR REPLACE FUNCTION notify_suppression(
    transactional boolean, muted boolean, switches jsonb, defaults jsonb, category text,
    channel text, kind text, email text, phone text, has_device boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT transactional AND coalesce(muted, false) THEN 'muted'
        WHEN NOT transactional
             AND NOT coalesce((switches -> category ->> channel)::boolean,
                              (defaults ->> channel)::boolean, true)
            THEN 'preference'
        WHEN (kind = 'email' AND email IS NULL)
             OR (kind = 'sms' AND phone IS NULL)
             OR (kind = 'push' AND NOT has_device)
            THEN 'no_contact'
    END
$$;

DROP FUNCTION IF EXISTS notify_preference_on(transactional boolean, switches jsonb, defaults jsonb, category text, channel text);
