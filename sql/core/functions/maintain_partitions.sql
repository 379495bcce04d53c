-- The day partitions of every day-partitioned table (outbox, delivery_attempts), made
-- ahead so the default partitions stay empty; run at migration and by every retention run
-- (prune_retention(), service/schedule/retention.py). Where the database has pg_partman
-- (Debian's postgresql-15-partman, CREATE EXTENSION pg_partman), it keeps them: each
-- table is registered once (create_parent, daily, a week ahead; our empty default
-- partition gives way to pg_partman's own, of the same name) and maintained by
-- run_maintenance. Elsewhere (the embedded PostgreSQL 16 has no contrib) the built-in
-- ensure_partitions() makes today and a week ahead. Both name a day <table>_pYYYY_MM_DD,
-- so a database can move from one to the other. Retention is never pg_partman's: it would
-- drop pending rows (drop_retained_partitions() does not). A role that cannot use
-- pg_partman (docs/scaling.md lists its grants) keeps the built-in maintainer and is told
-- so in a warning, so a plain role's migration never fails on it. Returns the partitions
-- made.
CREATE FUNCTION maintain_partitions() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    partman text := (SELECT e.extnamespace::regnamespace::text FROM pg_extension AS e
                     WHERE e.extname = 'pg_partman');
    usable boolean;
    parent regclass;
    before integer;
    made integer := 0;
    today date := (now() AT TIME ZONE 'UTC')::date;
    registered boolean;
    qualified text;
BEGIN
    IF partman IS NOT NULL THEN
        usable := has_schema_privilege(partman, 'USAGE, CREATE')
                  AND has_table_privilege(format('%I.part_config', partman),
                                          'SELECT, INSERT, UPDATE')
                  AND has_function_privilege(
                          format('%I.run_maintenance(text, boolean, boolean)', partman),
                          'EXECUTE');
        IF NOT usable THEN
            RAISE WARNING 'pg_partman is installed in schema % but this role cannot use it; '
                          'the built-in maintainer keeps the day partitions', partman
                USING HINT = 'GRANT ALL ON SCHEMA ' || partman || ', ALL TABLES, FUNCTIONS '
                             'and PROCEDURES IN SCHEMA ' || partman || ' to this role '
                             '(docs/scaling.md)';
            partman := NULL;
        END IF;
    END IF;
    FOREACH parent IN ARRAY ARRAY['outbox', 'delivery_attempts']::regclass[] LOOP
        IF partman IS NULL THEN
            made := made + ensure_partitions(parent, today, today + 7);
            CONTINUE;
        END IF;
        SELECT count(*) INTO before FROM pg_inherits AS i WHERE i.inhparent = parent;
        -- pg_partman names a table with its schema.
        SELECT format('%s.%s', n.nspname, c.relname) INTO qualified
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.oid = parent;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.part_config WHERE parent_table = %L)',
                       partman, qualified)
            INTO registered;
        IF NOT registered THEN
            EXECUTE format('DROP TABLE IF EXISTS %I', parent::text || '_default');
            EXECUTE format(
                'SELECT %I.create_parent(%L, %L, ''native'', ''daily'', p_premake => 7)',
                partman, qualified,
                CASE parent WHEN 'outbox'::regclass THEN 'created_at' ELSE 'started_at' END);
            -- Days ahead even while no rows come: a day first written in the default
            -- partition could not be made afterwards.
            EXECUTE format('UPDATE %I.part_config SET infinite_time_partitions = true'
                           ' WHERE parent_table = %L', partman, qualified);
        END IF;
        EXECUTE format('SELECT %I.run_maintenance(%L)', partman, qualified);
        made := made + (SELECT count(*) FROM pg_inherits AS i WHERE i.inhparent = parent)
                - before;
    END LOOP;
    RETURN made;
END
$$;
