-- A subject's bucket: a stable hash of its key, in [0, bucket_count()).
CREATE FUNCTION subject_bucket(subject text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT (hashtextextended(subject, 0) & (bucket_count() - 1))::smallint
$$;
