-- Revision 0001 downgrade: removes every object Procrastinate's schema created. Listed by
-- prefix rather than by name so it also covers objects a newer Procrastinate adds.
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT tgname, tgrelid::regclass AS rel FROM pg_trigger
               WHERE tgname LIKE 'procrastinate%' AND NOT tgisinternal LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', obj.tgname, obj.rel);
    END LOOP;
    FOR obj IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = current_schema() AND c.relkind = 'r'
                 AND c.relname LIKE 'procrastinate%' LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', obj.relname);
    END LOOP;
    FOR obj IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%' LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', obj.sig);
    END LOOP;
    FOR obj IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate%'
                 AND t.typtype IN ('e', 'c') LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', obj.typname);
    END LOOP;
END
$$;
