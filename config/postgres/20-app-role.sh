#!/bin/sh
# The application's login role for docker-compose.yml (docs/deployment.md): no superuser.
# It owns the service's database, so it runs the migrations and the services, and it may
# keep its own pg_cron jobs there (cron.database_name = mark_notify). The entrypoint runs
# this once, when it initialises an empty data directory, after 10-extensions.sql (which
# created pg_cron and pg_partman in POSTGRES_DB as the superuser POSTGRES_USER).
: "${MARK_NOTIFY_DB_PASSWORD:?set MARK_NOTIFY_DB_PASSWORD (config/compose.env.example)}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$MARK_NOTIFY_DB_PASSWORD" <<'SQL'
CREATE ROLE mark_notify LOGIN PASSWORD :'app_password';
ALTER DATABASE mark_notify OWNER TO mark_notify;
-- pg_cron: to read cron.database_name, to use its schema and to schedule our jobs
-- (pg_cron 1.4 revokes schedule_in_database from PUBLIC; cron.unschedule stays open).
GRANT pg_read_all_settings TO mark_notify;
GRANT USAGE ON SCHEMA cron TO mark_notify;
GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text, text, text, text, text, boolean)
    TO mark_notify;
-- pg_partman, where 10-extensions.sql made it: to register the day-partitioned tables
-- and keep their days (docs/scaling.md).
DO $$
BEGIN
    IF to_regnamespace('partman') IS NOT NULL THEN
        GRANT ALL ON SCHEMA partman TO mark_notify;
        GRANT ALL ON ALL TABLES IN SCHEMA partman TO mark_notify;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA partman TO mark_notify;
        GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA partman TO mark_notify;
    END IF;
END
$$;
SQL
