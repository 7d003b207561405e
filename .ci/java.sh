#!/usr/bin/env bash
# Make sure a Java runtime for Spark is installed (the Spark feature tests start a local[2]
# session), installing Debian's OpenJDK 17 as root when `java` is missing. Prints nothing on
# stdout: progress and errors go to stderr, so `make test` can run it before pytest. Idempotent.
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Java is not installed: sudo apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi
. "$(dirname "$0")/apt.sh"
apt_install openjdk-17-jre-headless >&2
command -v java >/dev/null 2>&1 || {
  echo "java still missing after apt-get install openjdk-17-jre-headless" >&2; exit 1; }
