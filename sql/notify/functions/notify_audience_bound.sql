-- The id of the n-th recipient after `after` (or of the last one, if fewer remain); NULL
-- when none remains. A chunk of the fan-out ends there. Read in id order through the
-- audience's index (notify_audience_sql() without buckets: on Citus a read of the
-- coordinator's copy of users, where a per-shard read would walk every user).
CREATE FUNCTION notify_audience_bound(recipients jsonb, after text, n integer) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bound text;
BEGIN
    EXECUTE 'SELECT max(chunk.id) FROM (SELECT u.id FROM '
            || notify_audience_sql(recipients, false)
            || ' ORDER BY u.id LIMIT $5) AS chunk'
    INTO bound
    USING recipients ->> 'topic',
          ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')), after,
          NULL::text, n;
    RETURN bound;
END
$$;
