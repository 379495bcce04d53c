-- An event's audience after user id `after` (exclusive) up to `upto` (inclusive): everyone,
-- a topic's members or the listed ids that exist, with what the fan-out needs of them.
-- PL/pgSQL, not SQL: Citus plans no SQL function that reads its tables with parameters.
CREATE FUNCTION notify_audience(recipients jsonb, after text, upto text)
RETURNS TABLE (id text, email text, phone text, timezone text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT u.id, u.email, u.phone, u.timezone
    FROM users AS u
    WHERE recipients ? 'all' AND u.id > after AND u.id <= upto
    UNION ALL
    SELECT u.id, u.email, u.phone, u.timezone
    FROM user_topics AS ut JOIN users AS u ON u.id = ut.user_id
    WHERE ut.topic = recipients ->> 'topic' AND ut.user_id > after AND ut.user_id <= upto
    UNION ALL
    SELECT u.id, u.email, u.phone, u.timezone
    FROM users AS u
    WHERE u.id = ANY(ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')))
      AND u.id > after AND u.id <= upto;
END
$$;
