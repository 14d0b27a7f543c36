#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the studio tests and print its SQLAlchemy URL.
# Usage: export GENLOOP_TEST_PG_URL=$(scripts/test-postgres.sh start)   ...   scripts/test-postgres.sh stop
# Needs Debian's postgresql package (initdb/pg_ctl under /usr/lib/postgresql/*/bin). Trust auth, port 55432,
# data in /tmp: for tests only, never for real data.
set -euo pipefail
PORT=${GENLOOP_TEST_PG_PORT:-55432}
DATA=${GENLOOP_TEST_PG_DATA:-/tmp/genloop-test-pg}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "no PostgreSQL server installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() {  # the server refuses to run as root
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}
case "${1:-start}" in
  start)
    if [ ! -s "$DATA/PG_VERSION" ]; then
      rm -rf "$DATA"; mkdir -p "$DATA"
      [ "$(id -u)" = 0 ] && chown postgres "$DATA"
      as_pg "$BIN/initdb -D $DATA -U postgres --auth=trust -E UTF8 >/dev/null"
    fi
    as_pg "$BIN/pg_ctl -D $DATA -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off' -l $DATA/log -w start >/dev/null" \
      || as_pg "$BIN/pg_ctl -D $DATA status >/dev/null"
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    as_pg "$BIN/pg_ctl -D $DATA -m fast stop >/dev/null" || true
    ;;
esac
