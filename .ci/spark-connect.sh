#!/usr/bin/env bash
# Start a Spark Connect server on 127.0.0.1 from the pip-installed pyspark (no Spark
# distribution needed: its spark-submit and jars/spark-connect_*.jar suffice) and print its
# URL, sc://127.0.0.1:PORT, on stdout. Idempotent: a server already answering on the port is
# reused. `bash .ci/spark-connect.sh stop` stops the server this script started on the port.
#
#   RETENTION_SPARK_CONNECT_PORT   port (default 15002, Spark Connect's own)
#   RETENTION_SPARK_CONNECT_DIR    its folder: pid, server.log, warehouse, scratch
#   RETENTION_SPARK_CONNECT_CORES  local[N] threads of the server (default: every core)
#   RETENTION_PYTHON               the interpreter with pyspark and this project (default
#                                  .venv/bin/python): the server's Python workers run it too
#   SPARK_DRIVER_MEMORY            the server's heap (default 2g)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${RETENTION_SPARK_CONNECT_PORT:-15002}
DIR=${RETENTION_SPARK_CONNECT_DIR:-/tmp/retention-spark-connect-$PORT}
CORES=${RETENTION_SPARK_CONNECT_CORES:-$(nproc)}
PY=${RETENTION_PYTHON:-$ROOT/.venv/bin/python}
up() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    kill "$(cat "$DIR/pid")"
    for _ in $(seq 100); do kill -0 "$(cat "$DIR/pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$DIR/pid"
  exit 0
fi

if ! up; then
  bash "$ROOT/.ci/java.sh"
  SPARK_BIN=$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin"))')
  mkdir -p "$DIR"
  "$PY" -c 'from features.spark import log_config; print(log_config("warn"), end="")' \
    > "$DIR/log4j2.properties"
  # spark-submit execs the JVM, so $! is the server's own pid.
  (cd "$DIR"
   SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY" nohup "$SPARK_BIN/spark-submit" \
    --class org.apache.spark.sql.connect.service.SparkConnectServer \
    --name "retention Spark Connect" --master "local[$CORES]" \
    --driver-memory "${SPARK_DRIVER_MEMORY:-2g}" \
    --driver-java-options "-Dlog4j2.configurationFile=file://$DIR/log4j2.properties" \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port="$PORT" \
    --conf spark.pyspark.python="$PY" \
    --conf spark.sql.warehouse.dir="$DIR/warehouse" \
    --conf spark.local.dir="$DIR/local" \
    --conf spark.sql.shuffle.partitions=$((2 * CORES > 4 ? 2 * CORES : 4)) \
    --conf spark.sql.session.timeZone=UTC \
    --conf spark.ui.enabled=false \
    >"$DIR/server.log" 2>&1 </dev/null & echo $! >"$DIR/pid")
  for _ in $(seq 240); do
    up && break
    kill -0 "$(cat "$DIR/pid")" 2>/dev/null || break
    sleep 0.5
  done
  if ! up; then
    echo "Spark Connect server did not start on 127.0.0.1:$PORT; $DIR/server.log:" >&2
    tail -20 "$DIR/server.log" >&2
    exit 1
  fi
fi
echo "sc://127.0.0.1:$PORT"
