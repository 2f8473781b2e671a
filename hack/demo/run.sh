#!/usr/bin/env bash
# Runs the two-service demo (see README.md) and shows its narrative.
# Needs root (workloads run as uids 64201-64203 through setpriv).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "hack/demo/run.sh runs workloads as other uids and must run as root (sudo hack/demo/run.sh)" >&2
  exit 1
fi
if ! command -v setpriv >/dev/null; then
  echo "setpriv not found: install util-linux (Debian: apt-get install util-linux)" >&2
  exit 1
fi
exec go test -count=1 -v -run '^TestDemo$' ./hack/demo/ "$@"
