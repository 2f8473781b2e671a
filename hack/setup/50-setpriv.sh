#!/usr/bin/env bash
# setpriv (util-linux): the agent e2e suite (hack/e2e/agent) runs workloads
# as several uids with `setpriv --reuid=U --regid=U --clear-groups`, which
# needs root. util-linux is essential on Debian, so this normally finds it.
set -euo pipefail
command -v setpriv >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq util-linux >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
  exit 0
fi
echo "missing: setpriv — install util-linux with your package manager (Debian: apt-get install util-linux)" >&2
exit 1
