#!/usr/bin/env bash
# Side-by-side ext_authz benchmark: Sigil authz vs opa-envoy-plugin, same
# 50-rule who-may-call-whom policy (authz/testdata/bench/policy), same
# CheckRequest, same machine, one after the other, driven by ghz:
#   1. fixed 2,000 rps for $DURATION: Check latency p50 / p99 / p99.9
#   2. saturation at concurrency $CONC for $DURATION: decisions/s
# Sigil is measured twice: decision log off (like the plugin's default) and
# on (file sink, masked request logged).
# Server CPU per decision (user+system ticks of the server process during
# the saturation run, from /proc) is the figure least distorted when client
# and servers share the cores.
# Needs opa-envoy-plugin and ghz (hack/setup/40-opa-envoy-plugin.sh,
# hack/setup/41-ghz.sh). Figures are reported, never asserted.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
export SIGIL_TOOLS=${SIGIL_TOOLS:-$ROOT/.cache/tools}
export PATH=$SIGIL_TOOLS:$PATH
DURATION=${DURATION:-10s}
RATE=${RATE:-2000}
CONC=${CONC:-32}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/hack/setup/40-opa-envoy-plugin.sh"
"$ROOT/hack/setup/41-ghz.sh"
cd "$ROOT"
go build -o "$WORK/sigil" ./cmd/sigil
go run ./hack/bench/authz/protoset "$WORK/authz.protoset"
POLICY=$ROOT/authz/testdata/bench/policy
REQ=$ROOT/authz/testdata/bench/allow.json

wait_ready() { # addr
	for _ in $(seq 1 300); do
		if ghz --insecure --protoset "$WORK/authz.protoset" --call envoy.service.auth.v3.Authorization/Check \
			-D "$REQ" -n 1 -c 1 "$1" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	echo "server at $1 never became ready" >&2
	return 1
}

cpu_ticks() { # pid: user+system clock ticks of the server process
	awk '{print $14 + $15}' "/proc/$1/stat"
}

measure() { # name addr pid
	local name=$1 addr=$2 pid=$3
	wait_ready "$addr"
	ghz --insecure --protoset "$WORK/authz.protoset" --call envoy.service.auth.v3.Authorization/Check \
		-D "$REQ" -c "$CONC" -z 3s "$addr" >/dev/null # warm up
	ghz --insecure --protoset "$WORK/authz.protoset" --call envoy.service.auth.v3.Authorization/Check \
		-D "$REQ" --rps "$RATE" -c 16 -z "$DURATION" --format json "$addr" >"$WORK/$name-rate.json"
	local t0
	t0=$(cpu_ticks "$pid")
	ghz --insecure --protoset "$WORK/authz.protoset" --call envoy.service.auth.v3.Authorization/Check \
		-D "$REQ" -c "$CONC" -z "$DURATION" --format json "$addr" >"$WORK/$name-sat.json"
	echo $(($(cpu_ticks "$pid") - t0)) >"$WORK/$name-ticks"
}

start_sigil() { # name with_log
	local name=$1 log=$2
	{
		echo "listen: 127.0.0.1:19191"
		echo "policy:"
		echo "  dir: $POLICY"
		if [[ $log == yes ]]; then
			echo "decision_log:"
			echo "  file: $WORK/$name-decisions.log"
			echo "  max_bytes: 1073741824"
		fi
	} >"$WORK/$name.yaml"
	"$WORK/sigil" authz run --config "$WORK/$name.yaml" 2>"$WORK/$name.err" &
	PIDS+=($!)
	measure "$name" 127.0.0.1:19191 "${PIDS[-1]}"
	kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

start_sigil sigil no
start_sigil sigil-log yes

start_plugin() { # name, then env assignments
	local name=$1
	shift
	env "$@" opa-envoy-plugin run --server --addr=127.0.0.1:18181 --diagnostic-addr=127.0.0.1:18282 --log-level=error \
		--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:19192 \
		--set=plugins.envoy_ext_authz_grpc.path=envoy/authz/allow "$POLICY" 2>"$WORK/$name.err" &
	PIDS+=($!)
	measure "$name" 127.0.0.1:19192 "${PIDS[-1]}"
	kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

# sigil authz run sets GC percent 400 (config gc_percent); the plugin is
# measured at Go's default and at the same setting.
start_plugin plugin
start_plugin plugin-gogc GOGC=400

python3 - "$WORK" "$RATE" "$CONC" "$(getconf CLK_TCK)" <<'PY'
import json, sys
work, rate, conc, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def pct(lat, p):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(len(lat) * p))] / 1e6
print(f"{'server':<26}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}   {'sat. decisions/s':>17}{'errors':>8}{'server CPU us/decision':>24}")
for name, label in [("sigil", "sigil (no decision log)"), ("sigil-log", "sigil (decision log on)"), ("plugin", "opa-envoy-plugin"), ("plugin-gogc", "opa-envoy-plugin GOGC=400")]:
    r = json.load(open(f"{work}/{name}-rate.json"))
    s = json.load(open(f"{work}/{name}-sat.json"))
    lat = [d["latency"] for d in r.get("details", []) if not d.get("error")]
    errs = sum(v for k, v in r["statusCodeDistribution"].items() if k != "OK")
    serrs = sum(v for k, v in s["statusCodeDistribution"].items() if k != "OK")
    ticks = int(open(f"{work}/{name}-ticks").read())
    cpu_us = ticks / hz * 1e6 / max(1, s["count"])
    print(f"{label:<26}{pct(lat,.5):>9.3f}{pct(lat,.99):>9.3f}{pct(lat,.999):>10.3f}{errs:>8}   {s['rps']:>17.0f}{serrs:>8}{cpu_us:>24.1f}")
print(f"(fixed rate {rate} rps, ghz -c 16; saturation ghz -c {conc}; client and server share the machine)")
PY
