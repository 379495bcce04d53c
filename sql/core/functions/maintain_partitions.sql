-- The partitions of every day-partitioned table (outbox, delivery_attempts) from today to
-- a week ahead, so the default partitions stay empty; run at migration and by every
-- retention run (prune_retention(), service/schedule/retention.py). Returns how many were
-- made.
CREATE FUNCTION maintain_partitions() RETURNS integer
LANGUAGE sql AS $$
    SELECT sum(ensure_partitions(p, (now() AT TIME ZONE 'UTC')::date,
                                 (now() AT TIME ZONE 'UTC')::date + 7))::integer
    FROM unnest(ARRAY['outbox', 'delivery_attempts']::regclass[]) AS p
$$;
