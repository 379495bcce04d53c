-- Who an event's recipients are, the one place of that rule: the FROM and WHERE of a query
-- over the audience as `u` (users) after user id $3 (exclusive) up to $4 (inclusive; NULL:
-- no bound), for recipients {"all": true}, {"topic": $1} or {"user_ids": $2}; anything
-- else has nobody. Text for EXECUTE, so each audience is read from its own index and
-- planned with its values (Citus plans nothing else it cannot see).
-- by_bucket: also `b`, the user's row of `buckets`, so that on Citus the statement runs
-- on every shard at once, each over its own buckets' users (users is a reference table,
-- copied to every node); the fan-out writes that way. Without it, one read in id order.
CREATE FUNCTION notify_audience_sql(recipients jsonb, by_bucket boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN recipients ? 'topic' THEN
            'user_topics AS ut JOIN users AS u ON u.id = ut.user_id'
            || CASE WHEN by_bucket
                    THEN ' JOIN buckets AS b ON b.bucket = user_bucket(ut.user_id)' ELSE '' END
            || ' WHERE ut.topic = $1 AND ut.user_id > $3'
            || ' AND ($4::text IS NULL OR ut.user_id <= $4)'
        ELSE
            'users AS u'
            || CASE WHEN by_bucket
                    THEN ' JOIN buckets AS b ON b.bucket = user_bucket(u.id)' ELSE '' END
            || CASE WHEN recipients ? 'all' THEN ' WHERE true'
                    WHEN recipients ? 'user_ids' THEN ' WHERE u.id = ANY($2)'
                    ELSE ' WHERE false' END
            || ' AND u.id > $3 AND ($4::text IS NULL OR u.id <= $4)'
    END
$$;
