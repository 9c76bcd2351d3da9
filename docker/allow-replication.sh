#!/usr/bin/env bash
# Lets a streaming replica copy and follow this server (docker-compose.yml: db-analytics,
# followed by db-analytics-replica). A replication connection matches no line whose
# database is "all", so the image's `host all all all scram-sha-256` does not let it in:
# it needs a line of its own, with a password all the same.
#
# The postgres image runs this once, when it initialises an empty data volume
# (/docker-entrypoint-initdb.d/). For a volume made before this file was mounted, run it
# by hand (it adds the line once and reloads the server):
#   docker compose exec -u postgres db-analytics bash /docker-entrypoint-initdb.d/allow-replication.sh
# No `set -e`, no `exit`: the image sources a script it cannot execute.

if ! grep -qxF 'host replication all all scram-sha-256' "$PGDATA/pg_hba.conf"; then
    printf '%s\n' 'host replication all all scram-sha-256' >>"$PGDATA/pg_hba.conf"
fi
pg_ctl reload -D "$PGDATA" -s
