-- Retention by whole days: detach each day partition of outbox and
-- delivery_attempts whose every row is past its retention, in one step per day instead of
-- a DELETE per row. An outbox day goes once none of its rows is pending and its newest
-- change is older than the longest age that applies to what it holds (`delivered`; `dead`
-- if it holds failed or dead rows; `inbox` if it holds rows of an inbox channel); an
-- attempts day once it ends before `attempts` ago and no pending row or dead letter was
-- made before it ended (so none of its attempts can be theirs: those keep their whole
-- history, as the row-by-row prune does). Every check reads a partial index of the day,
-- never its rows, so a large day costs the intake next to nothing before its drop.
-- Days that do not qualify are left to prune_retention_batch(), row by row.
-- The day is locked (EXCLUSIVE: readers go on) before it is checked, so bin/redeliver
-- cannot make a row pending between the check and the detach; detaching locks the parent,
-- so lock_timeout bounds how long the intake can queue behind it: a day not detached now
-- is by the next run. It detaches at most `max_days` days, because the parent stays locked
-- until the transaction ends: callers detach one day per transaction, then drop it in the
-- next (drop_detached_partitions(): deleting a day's files takes a while, and must not
-- happen under the parent's lock), again while one came back (prune_retention(),
-- service/schedule/retention.py). Returns the days detached.
CREATE FUNCTION drop_retained_partitions(
    delivered interval, inbox interval, dead interval, attempts interval,
    max_days integer DEFAULT 1
) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    keep boolean;
    dropped integer := 0;
    newest timestamptz;
    age interval;
    has_dead boolean;
    has_inbox boolean;
    inbox_channels text[] := ARRAY(SELECT ch.name FROM notify_channels AS ch
                                   WHERE ch.kind = 'inbox');
BEGIN
    FOR part IN
        SELECT c.oid::regclass AS child, p.oid::regclass AS parent,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                             'TO \(''([^'']+)''\)'))[1]::timestamptz AS ends
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        JOIN pg_class AS p ON p.oid = i.inhparent
        WHERE p.oid IN ('outbox'::regclass, 'delivery_attempts'::regclass)
          AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
        ORDER BY 3, 1
    LOOP
        CONTINUE WHEN part.parent = 'outbox'::regclass AND part.ends > now() - delivered;
        CONTINUE WHEN part.parent = 'delivery_attempts'::regclass
                      AND part.ends > now() - attempts;
        BEGIN
            PERFORM set_config('lock_timeout', '100ms', true);
            EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', part.child);
            IF part.parent = 'outbox'::regclass THEN
                -- Through outbox_due_idx, outbox_updated_at_idx, outbox_dead_idx and
                -- outbox_finished_idx of the day.
                EXECUTE format(
                    $q$SELECT EXISTS (SELECT 1 FROM %1$s WHERE status = 'pending'),
                              (SELECT max(updated_at) FROM %1$s),
                              EXISTS (SELECT 1 FROM %1$s WHERE status IN ('failed', 'dead')),
                              EXISTS (SELECT 1 FROM %1$s
                                      WHERE status IN ('delivered', 'suppressed')
                                        AND consumer = ANY($1))$q$,
                    part.child)
                INTO keep, newest, has_dead, has_inbox
                USING inbox_channels;
                age := greatest(delivered, CASE WHEN has_dead THEN dead END,
                                CASE WHEN has_inbox THEN inbox END);
                keep := keep OR newest >= now() - age;
            ELSE
                -- A row's attempts start after it was made: only the days of outbox
                -- before this one's end are read, through their partial indexes.
                SELECT EXISTS (SELECT 1 FROM outbox AS o
                               WHERE o.status IN ('pending', 'failed', 'dead')
                                 AND o.created_at < part.ends)
                INTO keep;
            END IF;
            IF NOT coalesce(keep, false) THEN
                EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', part.parent, part.child);
                RETURN NEXT part.child::text;
                dropped := dropped + 1;
                EXIT WHEN dropped >= max_days;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            RAISE LOG 'drop_retained_partitions: % is busy, left for the next run', part.child;
        END;
    END LOOP;
END
$$;
