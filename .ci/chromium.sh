#!/usr/bin/env bash
# Make sure Debian's Chromium and its WebDriver are installed (the console's browser tests
# drive them), installing them as root when missing. Prints nothing on stdout: progress and
# errors go to stderr, so `make test` can run it before pytest. Idempotent.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium is not installed: sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
. "$(dirname "$0")/apt.sh"
apt_install chromium chromium-driver >&2
[ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ] || {
  echo "chromium or chromedriver still missing after apt-get install" >&2; exit 1; }
