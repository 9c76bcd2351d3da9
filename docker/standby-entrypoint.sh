#!/usr/bin/env bash
# Entrypoint of a streaming replica of docker-compose.yml (db-analytics-replica): on its
# first start it copies its primary with `pg_basebackup -R -X stream`, which also writes
# primary_conninfo (into postgresql.auto.conf) and standby.signal; then it hands over to
# the postgres image's own entrypoint, which finds a data folder, skips its
# initialisation and runs postgres on it: a hot standby streaming from the primary.
#
# Where the primary is comes from the environment (PRIMARY_HOST, PRIMARY_PORT,
# PRIMARY_USER); its password only from the compose secret PRIMARY_PASSWORD_FILE, copied
# at every start into the 0600 passfile PGPASSFILE, outside the data volume. pg_basebackup
# reads that passfile, primary_conninfo names it (`passfile=`) for the walreceiver, and
# the healthcheck's psql finds it through PGPASSFILE: the password is never in argv nor in
# the environment. A changed password takes effect at the next start.
#
# The copy is made in "$PGDATA.partial" and renamed when complete, so a start that was
# interrupted copies again instead of running on half a data folder.
set -euo pipefail

: "${PRIMARY_HOST:?}" "${PRIMARY_PORT:?}" "${PRIMARY_USER:?}" "${PRIMARY_PASSWORD_FILE:?}"
: "${PGPASSFILE:?}" "${PGDATA:?}"

# A passfile escapes ':' and '\' in its fields with a backslash.
escape() {
    local value=${1//\\/\\\\}
    printf '%s' "${value//:/\\:}"
}

password=$(<"$PRIMARY_PASSWORD_FILE") # $(<...) drops the file's trailing newline
umask 077
# Any host: the same login has the same password on the primary and on this copy of it,
# where the healthcheck logs in.
printf '*:*:*:%s:%s\n' "$(escape "$PRIMARY_USER")" "$(escape "$password")" >"$PGPASSFILE"
unset password
chown postgres:postgres "$PGPASSFILE"
chmod 0600 "$PGPASSFILE"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -e "$PGDATA" ]; then
        echo "standby: $PGDATA exists but holds no data folder; remove the volume to copy the primary again" >&2
        exit 1
    fi
    volume=$(dirname "$PGDATA")
    chown postgres:postgres "$volume"
    rm -rf "$PGDATA.partial"
    echo "standby: copying $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA (pg_basebackup)"
    # --checkpoint=fast: start now, not at the primary's next scheduled checkpoint.
    # application_name: the name pg_stat_replication shows on the primary.
    gosu postgres pg_basebackup \
        --pgdata="$PGDATA.partial" \
        --write-recovery-conf \
        --wal-method=stream \
        --checkpoint=fast \
        --no-password \
        --dbname="host=$PRIMARY_HOST port=$PRIMARY_PORT user=$PRIMARY_USER passfile=$PGPASSFILE application_name=${STANDBY_NAME:-standby}"
    mv "$PGDATA.partial" "$PGDATA"
fi

exec docker-entrypoint.sh "$@"
