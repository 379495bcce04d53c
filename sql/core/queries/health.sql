-- name: schema_revision
-- returns: one row (version_num text), or none before the first migration
-- purpose: readiness: the database is reachable and migrated to the code's head revision.
SELECT version_num FROM alembic_version;
