-- An event's audience after user id `after` (exclusive) up to `upto` (inclusive; NULL: no
-- bound), with what the fan-out needs of them (notify_audience_sql() says who).
CREATE FUNCTION notify_audience(recipients jsonb, after text, upto text)
RETURNS TABLE (id text, email text, phone text, timezone text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT u.id, u.email, u.phone, u.timezone FROM '
        || notify_audience_sql(recipients, false)
    USING recipients ->> 'topic',
          ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')), after, upto;
END
$$;
