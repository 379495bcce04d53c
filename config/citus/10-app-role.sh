#!/bin/sh
# The application's login role on each node of docker-compose.citus.yml: no superuser, the
# owner of the service's database, so that it can run the migrations, which create the
# tables and have Citus place their shards on the workers as this role. The image's own
# init script has made the citus extension in POSTGRES_DB before this runs.
: "${MARK_NOTIFY_DB_PASSWORD:?set MARK_NOTIFY_DB_PASSWORD (config/compose.env.example)}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$MARK_NOTIFY_DB_PASSWORD" <<'SQL'
CREATE ROLE mark_notify LOGIN PASSWORD :'app_password';
ALTER DATABASE mark_notify OWNER TO mark_notify;
ALTER SCHEMA public OWNER TO mark_notify;
SQL
