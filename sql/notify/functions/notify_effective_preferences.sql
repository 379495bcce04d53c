-- A user's effective preferences, as GET and PUT /v1/preferences answer them and the
-- admin's user page shows them: every category of `categories` ({name: {transactional,
-- defaults}}, the caller's configuration, in its order) with every channel of `channels`
-- switched on or off by notify_preference_on(), the rule the fan-out applies; the user's
-- quiet hours on those channels; and the transactional categories, by name. Stored
-- switches the configuration no longer has are left out (they stay in the row, harmless).
CREATE FUNCTION notify_effective_preferences(
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
