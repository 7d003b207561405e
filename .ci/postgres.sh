#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1 (installing it from Debian's packages if needed) and
# print its URL on stdout. Idempotent: a server already running in the folder is reused.
set -euo pipefail
PORT=${RETENTION_PG_PORT:-55432}
DIR=${RETENTION_PG_DIR:-/tmp/retention-pg-$PORT}
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true; }
BIN=$(find_bin)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ] || ! id postgres >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL is not installed: sudo apt-get install -y postgresql" >&2; exit 1
  fi
  . "$(dirname "$0")/apt.sh"
  apt_install postgresql
  BIN=$(find_bin)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! as_pg "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
  as_pg "$BIN/initdb" -D "$DIR" -U retention --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  as_pg "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
fi
as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U retention -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'retention_test'" | grep -q 1 \
  || as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U retention retention_test
echo "postgresql://retention@127.0.0.1:$PORT/retention_test"
