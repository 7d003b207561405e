#!/usr/bin/env bash
# Start a throwaway Redis on 127.0.0.1 (installing it from Debian's packages if needed) and print
# its URL on stdout. Idempotent: a server already answering on the port is reused.
set -euo pipefail
PORT=${RETENTION_REDIS_PORT:-56379}
DIR=${RETENTION_REDIS_DIR:-/tmp/retention-redis-$PORT}
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "Redis is not installed: sudo apt-get install -y redis-server" >&2; exit 1
  fi
  . "$(dirname "$0")/apt.sh"
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; then
  mkdir -p "$DIR"
  redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save "" --appendonly no \
    --daemonize yes --logfile "$DIR/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
echo "redis://127.0.0.1:$PORT/0"
