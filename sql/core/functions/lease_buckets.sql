-- Renew this dispatcher's buckets of each consumer and rebalance, in one call: the
-- dispatcher says it is alive for p_lease_s, keeps the buckets it holds up to its fair
-- share (bucket_count() over the dispatchers alive for that consumer, rounded up), gives
-- back what is above it (its highest buckets), and takes free or expired buckets up to it.
-- A dispatcher that dies stops renewing: its buckets expire after p_lease_s and the others
-- take them on their next call. A dispatcher that joins takes its share as the others give
-- it back, within one renewal of theirs. Free rows are taken FOR UPDATE SKIP LOCKED, so
-- two dispatchers never take the same bucket. Returns each consumer's buckets now held.
CREATE FUNCTION lease_buckets(p_holder text, p_consumers text[], p_lease_s float8)
RETURNS TABLE (consumer text, buckets smallint[])
LANGUAGE plpgsql AS $$
DECLARE
    until timestamptz := now() + make_interval(secs => p_lease_s);
BEGIN
    INSERT INTO dispatch_members AS m (consumer, holder, expires_at)
    SELECT c, p_holder, until FROM unnest(p_consumers) AS c ORDER BY c
    ON CONFLICT ON CONSTRAINT dispatch_members_pkey DO UPDATE SET expires_at = excluded.expires_at;
    DELETE FROM dispatch_members AS m
    WHERE m.consumer = ANY(p_consumers) AND m.expires_at < now();
    INSERT INTO dispatch_leases (consumer, bucket)
    SELECT c, b::smallint
    FROM unnest(p_consumers) AS c CROSS JOIN generate_series(0, bucket_count() - 1) AS b
    ORDER BY 1, 2
    ON CONFLICT ON CONSTRAINT dispatch_leases_pkey DO NOTHING;

    WITH share AS (
        SELECT m.consumer, ceil(bucket_count()::numeric / count(*))::integer AS fair
        FROM dispatch_members AS m
        WHERE m.consumer = ANY(p_consumers)
        GROUP BY m.consumer
    ),
    mine AS (
        SELECT l.consumer, l.bucket,
               row_number() OVER (PARTITION BY l.consumer ORDER BY l.bucket) AS n
        FROM dispatch_leases AS l
        WHERE l.consumer = ANY(p_consumers) AND l.holder = p_holder
    )
    UPDATE dispatch_leases AS l
    SET holder = CASE WHEN mine.n <= s.fair THEN p_holder END,
        expires_at = CASE WHEN mine.n <= s.fair THEN until ELSE '-infinity' END,
        updated_at = now()
    FROM mine JOIN share AS s USING (consumer)
    WHERE l.consumer = mine.consumer AND l.bucket = mine.bucket;

    WITH share AS (
        SELECT m.consumer, ceil(bucket_count()::numeric / count(*))::integer AS fair
        FROM dispatch_members AS m
        WHERE m.consumer = ANY(p_consumers)
        GROUP BY m.consumer
    ),
    wanted AS (
        SELECT s.consumer,
               s.fair - (SELECT count(*) FROM dispatch_leases AS l
                         WHERE l.consumer = s.consumer AND l.holder = p_holder) AS missing
        FROM share AS s
    ),
    free AS (
        SELECT l.consumer, l.bucket
        FROM wanted AS w
        CROSS JOIN LATERAL (
            SELECT f.consumer, f.bucket FROM dispatch_leases AS f
            WHERE f.consumer = w.consumer AND w.missing > 0
              AND (f.holder IS NULL OR f.expires_at < now())
            ORDER BY f.bucket
            LIMIT greatest(w.missing, 0)
            FOR UPDATE SKIP LOCKED
        ) AS l
    )
    UPDATE dispatch_leases AS l
    SET holder = p_holder, expires_at = until, updated_at = now()
    FROM free
    WHERE l.consumer = free.consumer AND l.bucket = free.bucket;

    RETURN QUERY
    SELECT c, coalesce((SELECT array_agg(l.bucket ORDER BY l.bucket)
                        FROM dispatch_leases AS l
                        WHERE l.consumer = c AND l.holder = p_holder), '{}')
    FROM unnest(p_consumers) AS c;
END
$$;
