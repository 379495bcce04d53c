-- 0008_preference_rule: notify_preference_on, notify_suppression, notify_effective_preferences, as sql/ defines them now.
-- Drafted by `python -m service.migration_draft`; frozen once released: a later change
-- goes into a new revision (drafted the same way).

-- From sql/notify/functions/notify_preference_on.sql.
-- Whether a user's switches let one category's notifications out on one channel: always
-- for a transactional category, else the user's switch, else the category's default for
-- the channel, else on. The one place preference precedence is written: the fan-out's
-- notify_suppression() and the preferences the API and the admin show
-- (notify_effective_preferences()) both apply it. A single SQL expression, inlined into
-- the calling statement.
CREATE OR REPLACE FUNCTION notify_preference_on(
    transactional boolean, switches jsonb, defaults jsonb, category text, channel text
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT transactional
           OR coalesce((switches -> category ->> channel)::boolean,
                       (defaults ->> channel)::boolean, true)
$$;

-- From sql/notify/functions/notify_suppression.sql.
-- One of the per-channel rules of a notification, shared by the instant fan-out
-- (notify_materialize_chunk()) and the digests' (flush_digests()) so that both send by
-- the same rules. A single SQL expression, which the planner inlines into the calling
-- statement: no function call per row.
--
-- Why one channel of a notification is not sent ('muted', 'preference', 'no_contact'), or
-- NULL when it is: the user's mute and category switches (not for transactional
-- categories; the switches' precedence is notify_preference_on()), then the contact the
-- channel's kind needs. has_device is evaluated only when the rules get that far (a push
-- channel whose other rules passed).
CREATE OR REPLACE FUNCTION notify_suppression(
    transactional boolean, muted boolean, switches jsonb, defaults jsonb, category text,
    channel text, kind text, email text, phone text, has_device boolean
) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN NOT transactional AND coalesce(muted, false) THEN 'muted'
        WHEN NOT notify_preference_on(transactional, switches, defaults, category, channel)
            THEN 'preference'
        WHEN (kind = 'email' AND email IS NULL)
             OR (kind = 'sms' AND phone IS NULL)
             OR (kind = 'push' AND NOT has_device)
            THEN 'no_contact'
    END
$$;

-- From sql/notify/functions/notify_effective_preferences.sql.
-- A user's effective preferences, as GET and PUT /v1/preferences answer them and the
-- admin's user page shows them: every category of `categories` ({name: {transactional,
-- defaults}}, the caller's configuration, in its order) with every channel of `channels`
-- switched on or off by notify_preference_on(), the rule the fan-out applies; the user's
-- quiet hours on those channels; and the transactional categories, by name. Stored
-- switches the configuration no longer has are left out (they stay in the row, harmless).
CREATE OR REPLACE FUNCTION notify_effective_preferences(
    muted boolean, switches jsonb, quiet jsonb, categories json, channels text[]
) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT json_build_object(
        'muted', coalesce(muted, false),
        'categories', (
            SELECT coalesce(json_object_agg(c.key, (
                       SELECT coalesce(json_object_agg(
                                  ch.name,
                                  notify_preference_on((c.value ->> 'transactional')::boolean,
                                                       switches, (c.value -> 'defaults')::jsonb,
                                                       c.key, ch.name)
                                  ORDER BY ch.n), '{}')
                       FROM unnest(channels) WITH ORDINALITY AS ch (name, n)
                   ) ORDER BY c.n), '{}')
            FROM json_each(categories) WITH ORDINALITY AS c (key, value, n)
        ),
        'quiet_hours', (
            SELECT coalesce(jsonb_object_agg(w.key, w.value), '{}')
            FROM jsonb_each(CASE WHEN jsonb_typeof(quiet) = 'object' THEN quiet END) AS w
            WHERE w.key = ANY (channels)
        ),
        'transactional', (
            SELECT coalesce(json_agg(c.key ORDER BY c.key COLLATE "C"), '[]')
            FROM json_each(categories) AS c
            WHERE (c.value ->> 'transactional')::boolean
        )
    )
$$;
