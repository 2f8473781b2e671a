#!/usr/bin/env bash
# CPU and allocation profiles of `sigil authz run` under ghz saturation
# (the same policy, request and pinning as run.sh): where a decision's
# server CPU goes. Writes cpu.pprof, allocs.pprof and the sigil binary to
# $OUT (default ./authz-profile) and prints the top functions.
# Needs ghz (hack/setup/41-ghz.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
export SIGIL_TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
export PATH=$SIGIL_TOOLS:$PATH
OUT=$(mkdir -p "${OUT:-authz-profile}" && cd "${OUT:-authz-profile}" && pwd)
SECONDS_=${PROFILE_SECONDS:-10}
CONC=${CONC:-32}
SERVER_CPUS=${SERVER_CPUS-1}
CLIENT_CPUS=${CLIENT_CPUS-0}
WORK=$(mktemp -d)
PID=
cleanup() {
	if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/hack/setup/41-ghz.sh"
cd "$ROOT"
if [[ -n ${SIGIL_BIN:-} ]]; then cp "$SIGIL_BIN" "$OUT/sigil"; else go build -o "$OUT/sigil" ./cmd/sigil; fi
go run ./hack/bench/authz/protoset "$WORK/authz.protoset"
SERVER_PIN=() CLIENT_PIN=()
if [[ -n $SERVER_CPUS ]]; then SERVER_PIN=(taskset -c "$SERVER_CPUS"); fi
if [[ -n $CLIENT_CPUS ]]; then CLIENT_PIN=(taskset -c "$CLIENT_CPUS"); fi
cat >"$WORK/authz.yaml" <<YAML
listen: 127.0.0.1:19191
health_address: 127.0.0.1:19193
pprof: true
policy:
  dir: $ROOT/authz/testdata/bench/policy
YAML
"${SERVER_PIN[@]}" "$OUT/sigil" authz run --config "$WORK/authz.yaml" 2>"$WORK/authz.err" &
PID=$!
ghz_() {
	"${CLIENT_PIN[@]}" ghz --insecure --protoset "$WORK/authz.protoset" --call envoy.service.auth.v3.Authorization/Check \
		-D "$ROOT/authz/testdata/bench/allow.json" "$@" 127.0.0.1:19191
}
for _ in $(seq 1 300); do
	if ghz_ -n 1 -c 1 >/dev/null 2>&1; then break; fi
	sleep 0.2
done
ghz_ -c "$CONC" -z 3s >/dev/null # warm up
ghz_ -c "$CONC" -z "$((SECONDS_ + 4))s" >"$WORK/ghz.txt" &
GHZ=$!
sleep 2
curl -fsS -o "$OUT/cpu.pprof" "http://127.0.0.1:19193/debug/pprof/profile?seconds=$SECONDS_"
curl -fsS -o "$OUT/allocs.pprof" "http://127.0.0.1:19193/debug/pprof/allocs"
wait "$GHZ"
grep -E 'Requests/sec|Count' "$WORK/ghz.txt" || true
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
go tool pprof -top -nodecount=40 "$OUT/sigil" "$OUT/cpu.pprof" 2>/dev/null | sed -n '4,50p'
