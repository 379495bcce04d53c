-- name: citus_installed
-- returns: zero or one row (version text)
-- purpose: the cluster mode's precondition: the citus extension in this database.
SELECT extversion AS version FROM pg_extension WHERE extname = 'citus';

-- name: citus_unplaced
-- returns: rows (table_name text, placement text), in the order they must be placed
-- purpose: where each table goes on a Citus cluster, the one list of it (docs/scaling.md),
--   less the tables already placed. "reference": a copy on every node, read by the claims
--   and the fan-out on the workers (the catalog, the controls, and the users with their
--   preferences, devices, Web Push subscriptions and topics: docs/scaling.md says what
--   that costs);
--   "distributed": hash-distributed on `bucket`, every one co-located with outbox, so
--   that a subject's rows share a shard (`buckets`, a row per bucket, takes a statement
--   over the users to every shard). Every other table stays on the coordinator.
SELECT p.table_name, p.placement
FROM (VALUES
        (1, 'notify_channels', 'reference'),
        (2, 'notify_categories', 'reference'),
        (3, 'notify_event_types', 'reference'),
        (4, 'consumer_controls', 'reference'),
        (5, 'provider_controls', 'reference'),
        (6, 'users', 'reference'),
        (7, 'preferences', 'reference'),
        (8, 'push_devices', 'reference'),
        (9, 'user_topics', 'reference'),
        (10, 'webpush_subscriptions', 'reference'),
        (11, 'outbox', 'distributed'),
        (12, 'delivery_attempts', 'distributed'),
        (13, 'seen_marks', 'distributed'),
        (14, 'notifications', 'distributed'),
        (15, 'digest_items', 'distributed'),
        (16, 'buckets', 'distributed')
     ) AS p (position, table_name, placement)
WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition AS d
                  WHERE d.logicalrelid = p.table_name::regclass)
ORDER BY p.position;

-- name: citus_reference
-- returns: one row
-- purpose: make one table a reference table (its rows copied to every node).
SELECT create_reference_table(%(table)s::text::regclass);

-- name: citus_distribute
-- returns: one row
-- purpose: hash-distribute one table on its bucket, co-located with outbox (outbox
--   itself first, in a co-location group of its own); its rows move to the workers.
SELECT create_distributed_table(
    %(table)s::text::regclass, 'bucket',
    colocate_with => CASE WHEN %(table)s::text = 'outbox' THEN 'none' ELSE 'outbox' END);

-- name: citus_settings
-- returns: nothing
-- purpose: the cluster database's own settings: joins of co-located tables on something
--   other than the bucket (an analyst's join of outbox and delivery_attempts by id) are
--   repartitioned across the workers rather than refused. New sessions take it.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET citus.enable_repartition_joins = on',
                   current_database());
END
$$;

-- name: citus_analyze
-- returns: nothing
-- purpose: statistics of `buckets` on its shards, taken after placing: with them a
--   shard's plan of the fan-out starts from its own few buckets and reads just their
--   users through users_bucket_idx, instead of every user of the chunk.
ANALYZE buckets;
