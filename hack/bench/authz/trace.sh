#!/usr/bin/env bash
# What a p99 at a fixed rate is made of: runs one server pinned to CPU 1 and
# hack/bench/authz/load pinned to CPU 0 at $RATE calls/s (open loop,
# latency from the intended send time), and during the measured part takes
#   - a Go execution trace of the server ($TRACE_SECONDS, via pprof) and,
#     with CLIENT_TRACE=1, of the client (whole run),
#   - GODEBUG=gctrace=1 of the server,
#   - with PERF=1, `perf sched` of both CPUs (run-queue delays, who else ran),
# then joins the client's per-call samples with the traces
# (traceattr.py): GC windows, scheduler latency, and whether the slowest
# 1% of calls overlap a GC.
#   SERVER=sigil   ext_authz Check on the bench policy (as run.sh)
#   SERVER=floor   gRPC health Check on the same server (no policy)
#   SERVER=echo    TCP ping-pong (`load -serve-echo`): kernel loopback and
#                  Go netpoller, no gRPC (no server trace)
# RT=1 runs server and client SCHED_FIFO (chrt -f 10): on a box loaded by
# other work this keeps other processes off the two pinned CPUs, which is
# what a quiet box gives; it changes nothing else.
# SERVER_ENV: extra environment for the server (e.g. "GOGC=1600");
# LOAD_ARGS: extra flags for load (e.g. "-timeout 200ms", Envoy's default
# ext_authz timeout, sent as the call's deadline).
# Writes everything to $OUT (default ./authz-trace; no "=" in the path:
# env would take it for an assignment).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=$(mkdir -p "${OUT:-authz-trace}" && cd "${OUT:-authz-trace}" && pwd)
SERVER=${SERVER:-sigil}
RATE=${RATE:-2000}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
TRACE_SECONDS=${TRACE_SECONDS:-4}
SERVER_CPUS=${SERVER_CPUS-1}
CLIENT_CPUS=${CLIENT_CPUS-0}
SERVER_ENV=${SERVER_ENV:-}
WORK=$(mktemp -d)
PID=
cleanup() {
	if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
if [[ -n ${SIGIL_BIN:-} ]]; then cp "$SIGIL_BIN" "$OUT/sigil"; else go build -o "$OUT/sigil" ./cmd/sigil; fi
go build -o "$OUT/load" ./hack/bench/authz/load
SERVER_PIN=() CLIENT_PIN=()
if [[ -n $SERVER_CPUS ]]; then SERVER_PIN=(taskset -c "$SERVER_CPUS"); fi
if [[ -n $CLIENT_CPUS ]]; then CLIENT_PIN=(taskset -c "$CLIENT_CPUS"); fi
if [[ ${RT:-} == 1 ]]; then SERVER_PIN=(chrt -f 10 "${SERVER_PIN[@]}"); CLIENT_PIN=(chrt -f 10 "${CLIENT_PIN[@]}"); fi

ADDR=127.0.0.1:19191
case $SERVER in
sigil) CALL=(-call check -request "$ROOT/authz/testdata/bench/allow.json") ;;
floor) CALL=(-call health) ;;
echo) CALL=(-call echo -request "$ROOT/authz/testdata/bench/allow.json") ADDR=127.0.0.1:19194 ;;
*) echo "SERVER=$SERVER: want sigil, floor or echo" >&2; exit 2 ;;
esac
if [[ $SERVER == echo ]]; then
	# shellcheck disable=SC2086
	"${SERVER_PIN[@]}" env $SERVER_ENV "$OUT/load" -serve-echo "$ADDR" 2>"$OUT/server.err" &
else
	cat >"$WORK/authz.yaml" <<YAML
listen: $ADDR
health_address: 127.0.0.1:19193
pprof: true
policy:
  dir: $ROOT/authz/testdata/bench/policy
YAML
	# shellcheck disable=SC2086
	"${SERVER_PIN[@]}" env GODEBUG=gctrace=1 $SERVER_ENV "$OUT/sigil" authz run --config "$WORK/authz.yaml" 2>"$OUT/server.err" &
fi
PID=$!
for _ in $(seq 1 300); do
	if (exec 3<>/dev/tcp/${ADDR%:*}/${ADDR#*:}) 2>/dev/null; then break; fi
	sleep 0.2
done
sleep 0.5

CLIENT_TRACE_ARGS=()
if [[ ${CLIENT_TRACE:-} == 1 ]]; then CLIENT_TRACE_ARGS=(-trace "$OUT/client.trace"); fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/load-average"
# shellcheck disable=SC2086
"${CLIENT_PIN[@]}" "$OUT/load" "${CALL[@]}" -addr "$ADDR" -rate "$RATE" -duration "$DURATION" -warmup "$WARMUP" \
	-samples "$OUT/samples.csv" -json "$OUT/result.json" "${CLIENT_TRACE_ARGS[@]}" ${LOAD_ARGS:-} >"$OUT/result.txt" &
LOAD=$!
sleep "$(($(sed 's/s$//' <<<"$WARMUP") + 1))"
PERF=${PERF:-}
if [[ $PERF == 1 ]]; then
	perf sched record -q -C "${SERVER_CPUS:-0,1},${CLIENT_CPUS:-0}" -o "$OUT/perf-sched.data" -- sleep "$TRACE_SECONDS" 2>/dev/null &
	PERFPID=$!
fi
if [[ $SERVER != echo ]]; then
	curl -fsS -o "$OUT/server.trace" "http://127.0.0.1:19193/debug/pprof/trace?seconds=$TRACE_SECONDS"
fi
if [[ $PERF == 1 ]]; then wait "$PERFPID"; fi
wait "$LOAD"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load-average"
awk '/^Vm(RSS|HWM)/{printf "server %s %d MB\n", $1, $2 / 1024}' "/proc/$PID/status" | tee "$OUT/server-rss.txt"
cat "$OUT/result.txt"
if [[ $SERVER != echo ]]; then
	grep -c '^gc ' "$OUT/server.err" | sed 's/^/server GC cycles since start (gctrace): /'
	go tool trace -d=parsed "$OUT/server.trace" >"$WORK/server.parsed"
	python3 "$ROOT/hack/bench/authz/traceattr.py" "$OUT/samples.csv" "$WORK/server.parsed" server | tee "$OUT/server-attr.txt"
fi
if [[ ${CLIENT_TRACE:-} == 1 ]]; then
	go tool trace -d=parsed "$OUT/client.trace" >"$WORK/client.parsed"
	python3 "$ROOT/hack/bench/authz/traceattr.py" "$OUT/samples.csv" "$WORK/client.parsed" client | tee "$OUT/client-attr.txt"
fi
if [[ $PERF == 1 ]]; then
	# From the kernel's view: how long the server's and the client's
	# threads waited on the run queue after a wake-up (sch delay), and how
	# much CPU time other processes took on the two pinned CPUs.
	perf sched timehist -i "$OUT/perf-sched.data" 2>/dev/null | python3 -c '
import re, sys
pids = {sys.argv[1]: "server", sys.argv[2]: "client"}
delay = {"server": [], "client": []}
other = {}
for line in sys.stdin:
    m = re.match(r"\s*[\d.]+ \[(\d+)\]\s+(\S.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
    if not m:
        continue
    cpu, task, _, sch, run = m.groups()
    t = re.search(r"\[(\d+)(?:/(\d+))?\]$", task)
    pid = t and (t.group(2) or t.group(1))
    if pid in pids:
        delay[pids[pid]].append(float(sch))
    elif task != "<idle>":
        other[cpu] = other.get(cpu, 0) + float(run)
for who, d in delay.items():
    d.sort()
    q = lambda p: d[min(len(d) - 1, int(len(d) * p))] if d else float("nan")
    print(f"perf sched: {who} threads: {len(d)} switches, run-queue delay p50 {q(.5):.3f}  p99 {q(.99):.3f}  max {max(d, default=0):.3f} ms")
print("perf sched: CPU time of other processes: " + ", ".join(f"CPU {int(c)} {ms:.0f} ms" for c, ms in sorted(other.items())))
' "$PID" "$LOAD" | tee "$OUT/perf-sched.txt"
fi
