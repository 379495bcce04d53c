-- One bounded batch of retention, in the caller's transaction: up to batch_size rows of
-- each kind past its age, oldest first. Kinds: 'delivered' (delivered and suppressed
-- outbox rows; those of inbox channels after `inbox`), 'dead' (dead letters: failed and
-- dead outbox rows), 'attempts' (the attempts of those rows; and, once no such row is
-- left, attempts older than `attempts` of delivered and suppressed rows that stay),
-- 'digest_items' (flushed).
-- Pending rows and their attempts are never touched. Rows are taken FOR UPDATE SKIP
-- LOCKED, so the prune neither waits for nor blocks a dispatcher, bin/redeliver or the
-- digest flush: a locked row is left for a later run.
-- Each kind returns how far it got (`reached`, a time); a loop passes it back as that
-- kind's `*_from`, so the next batch starts there instead of stepping again over the
-- index entries of every row pruned so far (they stay until VACUUM). full_batch: the
-- kind filled its batch, so more may be waiting. The caller's transaction commits
-- asynchronously (synchronous_commit off): a batch lost in a crash is pruned again by the
-- next run, and the intake's commits do not wait behind a flush of the prune's WAL
-- (docs/performance.md: it is most of what a prune adds to the intake's p99).
-- buckets: the rows of these buckets only (NULL: every bucket). On Citus the callers go
-- group by group (bucket_groups()), so that every statement here, the row locks with SKIP
-- LOCKED and the loose scan included, is routed to one shard.
CREATE FUNCTION prune_retention_batch(
    delivered interval, inbox interval, dead interval, attempts interval,
    digest_items interval, batch_size integer,
    delivered_from timestamptz DEFAULT '-infinity', dead_from timestamptz DEFAULT '-infinity',
    attempts_from timestamptz DEFAULT '-infinity',
    digest_items_from timestamptz DEFAULT '-infinity',
    buckets smallint[] DEFAULT NULL
) RETURNS TABLE (kind text, pruned bigint, full_batch boolean, reached timestamptz)
-- Plans made for the values at hand: Citus routes a statement by the buckets it names, and
-- a generic plan (PL/pgSQL's after five calls) hides them.
SET plan_cache_mode = force_custom_plan
LANGUAGE plpgsql AS $$
DECLARE
    -- Cutoffs rather than ages in the queries: `attempts` is also an outbox column.
    delivered_before timestamptz := now() - delivered;
    inbox_before timestamptz := now() - inbox;
    dead_before timestamptz := now() - dead;
    attempts_before timestamptz := now() - attempts;
    digest_before timestamptz := now() - digest_items;
    scope smallint[] := coalesce(
        buckets, ARRAY(SELECT b::smallint FROM generate_series(0, bucket_count() - 1) AS b));
    finished bigint;
    finished_attempts bigint;
    finished_reached timestamptz;
    buried bigint;
    buried_attempts bigint;
    buried_reached timestamptz;
    lone_attempts bigint := 0;
    lone_reached timestamptz := attempts_from;
    items bigint;
    items_reached timestamptz;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    -- The consumers with finished rows, by a loose scan of outbox_finished_idx from its
    -- young end (the old end is where pruned rows leave dead index entries); then each
    -- one's oldest finished rows past its age, and the oldest of those overall. The lock
    -- re-checks them.
    WITH RECURSIVE consumers AS (
        SELECT max(o.consumer) AS consumer FROM outbox AS o
        WHERE o.status IN ('delivered', 'suppressed') AND o.bucket = ANY(scope)
        UNION ALL
        SELECT (SELECT max(o.consumer) FROM outbox AS o
                WHERE o.status IN ('delivered', 'suppressed') AND o.consumer < c.consumer
                  AND o.bucket = ANY(scope))
        FROM consumers AS c
        WHERE c.consumer IS NOT NULL
    ),
    cutoffs AS (
        SELECT c.consumer,
               CASE WHEN ch.kind = 'inbox' THEN inbox_before ELSE delivered_before END AS before
        FROM consumers AS c
        LEFT JOIN notify_channels AS ch ON ch.name = c.consumer
        WHERE c.consumer IS NOT NULL
    ),
    candidates AS MATERIALIZED (
        SELECT old.id, old.bucket, old.updated_at, cu.before
        FROM cutoffs AS cu
        CROSS JOIN LATERAL (
            SELECT o.id, o.bucket, o.updated_at FROM outbox AS o
            WHERE o.consumer = cu.consumer AND o.status IN ('delivered', 'suppressed')
              AND o.updated_at >= delivered_from AND o.updated_at < cu.before
              AND o.bucket = ANY(scope)
            ORDER BY o.updated_at
            LIMIT batch_size
        ) AS old
        ORDER BY old.updated_at
        LIMIT batch_size
    ),
    doomed AS (
        SELECT o.id, o.bucket FROM outbox AS o
        JOIN candidates AS c ON c.id = o.id AND c.bucket = o.bucket
        WHERE o.status IN ('delivered', 'suppressed') AND o.updated_at < c.before
          AND o.bucket = ANY(scope)
        FOR UPDATE OF o SKIP LOCKED
    ),
    gone AS (
        DELETE FROM outbox AS o USING doomed AS d
        WHERE o.id = d.id AND o.bucket = d.bucket AND o.bucket = ANY(scope)
        RETURNING o.id, o.bucket
    ),
    gone_attempts AS (
        DELETE FROM delivery_attempts AS a USING gone AS g
        WHERE a.outbox_id = g.id AND a.bucket = g.bucket AND a.bucket = ANY(scope)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts),
           (SELECT coalesce(max(c.updated_at), delivered_from) FROM candidates AS c)
    INTO finished, finished_attempts, finished_reached;

    -- Dead letters (failed and dead rows) the same way, through outbox_dead_idx.
    WITH RECURSIVE consumers AS (
        SELECT max(o.consumer) AS consumer FROM outbox AS o
        WHERE o.status IN ('failed', 'dead') AND o.bucket = ANY(scope)
        UNION ALL
        SELECT (SELECT max(o.consumer) FROM outbox AS o
                WHERE o.status IN ('failed', 'dead') AND o.consumer < c.consumer
                  AND o.bucket = ANY(scope))
        FROM consumers AS c
        WHERE c.consumer IS NOT NULL
    ),
    candidates AS MATERIALIZED (
        SELECT old.id, old.bucket, old.updated_at
        FROM consumers AS c
        CROSS JOIN LATERAL (
            SELECT o.id, o.bucket, o.updated_at FROM outbox AS o
            WHERE o.consumer = c.consumer AND o.status IN ('failed', 'dead')
              AND o.updated_at >= dead_from AND o.updated_at < dead_before
              AND o.bucket = ANY(scope)
            ORDER BY o.updated_at
            LIMIT batch_size
        ) AS old
        ORDER BY old.updated_at
        LIMIT batch_size
    ),
    doomed AS (
        SELECT o.id, o.bucket FROM outbox AS o
        WHERE (o.id, o.bucket) IN (SELECT c.id, c.bucket FROM candidates AS c)
          AND o.status IN ('failed', 'dead') AND o.updated_at < dead_before
          AND o.bucket = ANY(scope)
        FOR UPDATE SKIP LOCKED
    ),
    gone AS (
        DELETE FROM outbox AS o USING doomed AS d
        WHERE o.id = d.id AND o.bucket = d.bucket AND o.bucket = ANY(scope)
        RETURNING o.id, o.bucket
    ),
    gone_attempts AS (
        DELETE FROM delivery_attempts AS a USING gone AS g
        WHERE a.outbox_id = g.id AND a.bucket = g.bucket AND a.bucket = ANY(scope)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts),
           (SELECT coalesce(max(c.updated_at), dead_from) FROM candidates AS c)
    INTO buried, buried_attempts, buried_reached;

    -- Old attempts of rows that stay (inbox rows), once the rows past their age are gone
    -- (their attempts go with them). The row is share-locked so that bin/redeliver cannot
    -- make it pending meanwhile. Old attempts of pending, failed and dead rows are stepped
    -- over.
    IF finished < batch_size AND buried < batch_size THEN
        WITH candidates AS MATERIALIZED (
            SELECT a.outbox_id, a.bucket, a.attempt, a.updated_at FROM delivery_attempts AS a
            JOIN outbox AS o ON o.id = a.outbox_id AND o.bucket = a.bucket
            WHERE a.updated_at >= attempts_from AND a.updated_at < attempts_before
              AND o.status IN ('delivered', 'suppressed') AND a.bucket = ANY(scope)
              AND o.bucket = ANY(scope)
            ORDER BY a.updated_at
            LIMIT batch_size
            FOR UPDATE OF a SKIP LOCKED
            FOR SHARE OF o SKIP LOCKED
        ),
        gone AS (
            DELETE FROM delivery_attempts AS a USING candidates AS c
            WHERE a.outbox_id = c.outbox_id AND a.attempt = c.attempt AND a.bucket = c.bucket
              AND a.bucket = ANY(scope)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone),
               (SELECT coalesce(max(c.updated_at), attempts_from) FROM candidates AS c)
        INTO lone_attempts, lone_reached;
    END IF;

    WITH candidates AS MATERIALIZED (
        SELECT d.id, d.bucket, d.flushed_at FROM digest_items AS d
        WHERE d.notification_id IS NOT NULL
          AND d.flushed_at >= digest_items_from AND d.flushed_at < digest_before
          AND d.bucket = ANY(scope)
        ORDER BY d.flushed_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ),
    gone AS (
        DELETE FROM digest_items AS d USING candidates AS c
        WHERE d.id = c.id AND d.bucket = c.bucket AND d.bucket = ANY(scope)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone),
           (SELECT coalesce(max(c.flushed_at), digest_items_from) FROM candidates AS c)
    INTO items, items_reached;

    RETURN QUERY VALUES
        ('delivered'::text, finished, finished >= batch_size, finished_reached),
        ('dead', buried, buried >= batch_size, buried_reached),
        ('attempts', finished_attempts + buried_attempts + lone_attempts,
         lone_attempts >= batch_size, lone_reached),
        ('digest_items', items, items >= batch_size, items_reached);
END
$$;
