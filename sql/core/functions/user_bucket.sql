-- A user's bucket: that of the user's own seen marks (subject 'client:<user id>'), so a
-- user's notifications, deliveries, digest items and marks share a shard: the inbox and
-- the escalation's seen check read one shard on Citus.
CREATE FUNCTION user_bucket(user_id text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT subject_bucket('client:' || user_id)
$$;
