-- Drop the days drop_retained_partitions() detached: tables named as days of outbox or
-- delivery_attempts (<table>_pYYYY_MM_DD) that are no partition. In a transaction of its
-- own, after the detach committed, so the files of a day are deleted without the parent
-- locked; a day left detached by a crash in between is dropped by the next run. Returns
-- the days dropped.
CREATE FUNCTION drop_detached_partitions() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day regclass;
    dropped integer := 0;
BEGIN
    FOR day IN
        SELECT c.oid::regclass FROM pg_class AS c
        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
          AND NOT c.relispartition
          AND c.relname ~ '^(outbox|delivery_attempts)_p[0-9]{4}_[0-9]{2}_[0-9]{2}$'
    LOOP
        EXECUTE format('DROP TABLE %s', day);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
