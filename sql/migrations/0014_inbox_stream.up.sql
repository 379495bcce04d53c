-- 0014_inbox_stream: prune_inbox_changes, prune_retention, as sql/ defines them now.
-- Drafted by `python -m service.migration_draft`; frozen once released: a later change
-- goes into a new revision (drafted the same way).

-- From sql/notify/tables.sql: the live inbox's change log.
CREATE TABLE inbox_changes (
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    user_id    text        NOT NULL,
    item_id    text        NOT NULL,
    change     text        NOT NULL CHECK (change IN ('item', 'seen')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_changes_user_idx ON inbox_changes (user_id, xid);
CREATE INDEX inbox_changes_xid_idx ON inbox_changes (xid);
CREATE INDEX inbox_changes_created_at_idx ON inbox_changes (created_at);

-- From sql/retention/functions/prune_inbox_changes.sql.
-- One batch of the live inbox's change log past its age (at most batch_size rows, oldest
-- first), in the caller's transaction; how many went. A stream resumes from a position no
-- older than this age (service/notify/inbox_stream.py), so nothing it needs is pruned.
CREATE OR REPLACE FUNCTION prune_inbox_changes(keep interval, batch_size integer) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM inbox_changes
        WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM inbox_changes
            WHERE created_at < now() - keep
            ORDER BY created_at
            LIMIT batch_size))
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- From sql/retention/functions/prune_retention.sql.
DROP PROCEDURE prune_retention(delivered interval, inbox interval, dead interval, attempts interval, digest_items interval, batch_size integer, pause interval);
-- Everything past its age: first whole days (drop_retained_partitions() detaches a day
-- per transaction, drop_detached_partitions() drops it in the next; after making the days
-- ahead, maintain_partitions()), then what is left batch after batch with a COMMIT
-- after each, group of buckets by group (bucket_groups(): one on one server, one per shard
-- on Citus), so no lock or snapshot is held for long however large the backlog; `pause`
-- between batches leaves the database to the intake. Totals go to the server log. It commits, so it must be
-- CALLed on its own, outside a transaction block; pg_cron does that:
--   SELECT cron.schedule('mark-notify-retention', '17 3 * * *',
--       $$CALL prune_retention(delivered => '7 days', inbox => '90 days', dead => '30 days',
--                              attempts => '30 days', digest_items => '7 days',
--                              inbox_changes => '1 day', batch_size => 250,
--                              pause => '10 milliseconds')$$);
-- The defaults are those of [retention] (service/config/schedule.py); the Procrastinate
-- backend runs the same loop from Python (service/schedule/retention.py).
CREATE OR REPLACE PROCEDURE prune_retention(
    delivered interval DEFAULT '7 days', inbox interval DEFAULT '90 days',
    dead interval DEFAULT '30 days', attempts interval DEFAULT '30 days',
    digest_items interval DEFAULT '7 days', batch_size integer DEFAULT 250,
    pause interval DEFAULT '10 milliseconds', inbox_changes interval DEFAULT '1 day'
)
LANGUAGE plpgsql AS $$
DECLARE
    more boolean := true;
    batches integer := 0;
    totals jsonb := '{}';
    progress jsonb := '{}';
    b record;
    days integer;
    -- The groups as JSON arrays, read before the loop commits.
    groups jsonb := (SELECT jsonb_agg(to_jsonb(g)) FROM bucket_groups() AS g);
    scope smallint[];
    pruned bigint;
BEGIN
    PERFORM maintain_partitions();
    COMMIT;
    days := 0;
    -- A day per transaction: the parent is locked from the detach to the commit.
    LOOP
        PERFORM drop_detached_partitions();
        COMMIT;
        PERFORM drop_retained_partitions(delivered, inbox, dead, attempts);
        EXIT WHEN NOT FOUND;
        days := days + 1;
        COMMIT;
    END LOOP;
    FOR g IN 0 .. jsonb_array_length(groups) - 1 LOOP
        scope := ARRAY(SELECT jsonb_array_elements_text(groups -> g)::smallint);
        more := true;
        progress := '{}';
        WHILE more LOOP
            more := false;
            FOR b IN
                SELECT * FROM prune_retention_batch(
                    delivered, inbox, dead, attempts, digest_items, batch_size,
                    coalesce((progress ->> 'delivered')::timestamptz, '-infinity'),
                    coalesce((progress ->> 'dead')::timestamptz, '-infinity'),
                    coalesce((progress ->> 'attempts')::timestamptz, '-infinity'),
                    coalesce((progress ->> 'digest_items')::timestamptz, '-infinity'),
                    scope)
            LOOP
                more := more OR b.full_batch;
                totals := totals || jsonb_build_object(
                    b.kind, coalesce((totals ->> b.kind)::bigint, 0) + b.pruned);
                progress := progress || jsonb_build_object(b.kind, b.reached);
            END LOOP;
            batches := batches + 1;
            COMMIT;
            IF more AND pause > interval '0' THEN
                PERFORM pg_sleep_for(pause);
            END IF;
        END LOOP;
    END LOOP;
    -- The live inbox's change log: a local table, on the coordinator too.
    LOOP
        pruned := prune_inbox_changes(inbox_changes, batch_size);
        totals := totals || jsonb_build_object(
            'inbox_changes', coalesce((totals ->> 'inbox_changes')::bigint, 0) + pruned);
        batches := batches + 1;
        COMMIT;
        EXIT WHEN pruned < batch_size;
        IF pause > interval '0' THEN
            PERFORM pg_sleep_for(pause);
        END IF;
    END LOOP;
    RAISE LOG 'prune_retention: dropped % days, pruned % in % batches', days, totals, batches;
END
$$;
