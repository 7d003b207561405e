#!/usr/bin/env bash
# apt_install PKG...: install Debian packages as root, waiting (up to 15 minutes) for another
# package manager run to release its locks instead of failing. Sourced by the .ci scripts.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  local deadline=$((SECONDS + 900)) log
  log=$(mktemp)
  while :; do
    if apt-get -o DPkg::Lock::Timeout=60 update -qq >"$log" 2>&1 \
      && apt-get -o DPkg::Lock::Timeout=60 install -y -qq "$@" >>"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"; return 0
    fi
    if ! grep -qiE "could not get lock|unable to lock|is another process using it" "$log" \
      || [ "$SECONDS" -ge "$deadline" ]; then
      cat "$log" >&2; rm -f "$log"
      echo "apt-get install $* failed (see above)" >&2; return 1
    fi
    echo "waiting for another package manager run to finish..." >&2
    sleep 5
  done
}
