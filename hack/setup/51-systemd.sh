#!/usr/bin/env bash
# systemd-analyze and systemd-sysusers (package systemd): deploy/systemd's
# test checks the units with `systemd-analyze verify` and the users file with
# `systemd-sysusers --root`. Neither needs a running systemd (PID 1).
set -euo pipefail
command -v systemd-analyze >/dev/null && command -v systemd-sysusers >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing systemd (for systemd-analyze verify)"
  apt-get install -y -qq systemd >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
  exit 0
fi
echo "missing: systemd-analyze — install systemd with your package manager (Debian: apt-get install systemd)" >&2
exit 1
