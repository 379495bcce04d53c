-- The shard key: every row that grows with traffic carries the bucket of its subject (the
-- user of a notification and its rows, the subject of a seen mark and its outbox row), so
-- one subject's rows stay together wherever the buckets are placed: per-subject order and
-- dedupe need no other node. Dispatchers lease buckets (lease_buckets()), and a Citus
-- cluster distributes the growing tables on this column (docs/scaling.md). The count is
-- fixed: changing it moves every row.
CREATE FUNCTION bucket_count() RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 64::smallint $$;

