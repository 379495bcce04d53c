-- The id of the n-th recipient after `after` (or of the last one, if fewer remain); NULL
-- when none remains. A chunk of the fan-out ends there. PL/pgSQL, as notify_audience().
CREATE FUNCTION notify_audience_bound(recipients jsonb, after text, n integer) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT max(chunk.id) FROM (
            SELECT audience.id FROM (
                SELECT u.id FROM users AS u WHERE recipients ? 'all' AND u.id > after
                UNION ALL
                SELECT ut.user_id FROM user_topics AS ut
                WHERE ut.topic = recipients ->> 'topic' AND ut.user_id > after
                UNION ALL
                SELECT u.id FROM users AS u
                WHERE u.id = ANY(ARRAY(SELECT jsonb_array_elements_text(recipients -> 'user_ids')))
                  AND u.id > after
            ) AS audience
            ORDER BY audience.id
            LIMIT n
        ) AS chunk
    );
END
$$;
