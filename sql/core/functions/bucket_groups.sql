-- The buckets grouped by where their rows live, each group an array in bucket order: on a
-- Citus cluster one group per shard of outbox (a claim names the buckets of one group, so
-- Citus routes it to that shard: FOR UPDATE SKIP LOCKED is refused across shards); on one
-- PostgreSQL a single group of every bucket. Dispatchers read it at start
-- (dispatcher/bucket_leases.py). PL/pgSQL plans a statement when it first runs, so the
-- Citus catalog is read only where it exists.
CREATE FUNCTION bucket_groups() RETURNS SETOF smallint[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    distributed boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE $q$SELECT EXISTS (SELECT 1 FROM pg_dist_partition
                                  WHERE logicalrelid = 'outbox'::regclass)$q$
        INTO distributed;
    END IF;
    IF distributed THEN
        RETURN QUERY EXECUTE $q$
            SELECT array_agg(b::smallint ORDER BY b)
            FROM generate_series(0, bucket_count() - 1) AS b
            GROUP BY get_shard_id_for_distribution_column('outbox', b::smallint)
            ORDER BY min(b)$q$;
    ELSE
        RETURN QUERY SELECT array_agg(b::smallint ORDER BY b)
                     FROM generate_series(0, bucket_count() - 1) AS b;
    END IF;
END
$$;
