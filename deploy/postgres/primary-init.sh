#!/bin/sh
# compose.yaml: run once by the postgres image when it makes the primary's data directory
# (/docker-entrypoint-initdb.d): the role and the slot the streaming replica connects with, and two
# of the session settings patientkontrakt/storage/database.py sends on a direct connection, on the
# service's role, since through PgBouncer a client sends none at startup.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot('replica1');
ALTER ROLE CURRENT_USER SET plan_cache_mode = 'force_generic_plan';
ALTER ROLE CURRENT_USER SET jit = off;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
