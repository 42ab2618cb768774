#!/bin/sh
# compose.yaml: the hot standby. On its first start it copies the primary with pg_basebackup
# (-R writes primary_conninfo and standby.signal; -S: the slot keeps the WAL it still needs),
# then runs PostgreSQL as a read-only replica that streams the primary's WAL. Arguments go to
# postgres.
set -eu
primary_port=${PRIMARY_PORT:-5432}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -q -h "$PRIMARY_HOST" -p "$primary_port"; do sleep 1; done
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p "$primary_port" -U replicator \
        -D "$PGDATA" -R -X stream -S replica1 -c fast
fi
exec postgres -c hot_standby=on "$@"
