-- Whether a user's switches let one category's notifications out on one channel: always
-- for a transactional category, else the user's switch, else the category's default for
-- the channel, else on. The one place preference precedence is written: the fan-out's
-- notify_suppression() and the preferences the API and the admin show
-- (notify_effective_preferences()) both apply it. A single SQL expression, inlined into
-- the calling statement.
CREATE FUNCTION notify_preference_on(
    transactional boolean, switches jsonb, defaults jsonb, category text, channel text
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT transactional
           OR coalesce((switches -> category ->> channel)::boolean,
                       (defaults ->> channel)::boolean, true)
$$;
