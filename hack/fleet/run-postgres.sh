#!/usr/bin/env bash
# Runs the fleet simulator against CA replicas on a throwaway PostgreSQL 15
# cluster (started here on a free loopback port, removed on exit).
# Usage: hack/fleet/run-postgres.sh [fleet flags...]   e.g. --replicas 2 --agents 100
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/sigil-fleet-pg.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
cleanup() { as_pg "$pgbin/pg_ctl -D $work/data -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo "fleet: PostgreSQL on 127.0.0.1:$port ($work)" >&2
as_pg "$pgbin/initdb -D $work/data -A trust -U postgres" >/dev/null
as_pg "$pgbin/pg_ctl -D $work/data -l $work/log -w -o '-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c max_connections=300' start" >/dev/null
(cd "$root" && go build -o "$work/sigil" ./cmd/sigil && go build -o "$work/fleet" ./hack/fleet)
"$work/fleet" --sigil "$work/sigil" --postgres-dsn "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" "$@"
