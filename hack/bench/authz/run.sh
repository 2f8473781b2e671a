#!/usr/bin/env bash
# Side-by-side ext_authz benchmark: Sigil authz vs opa-envoy-plugin, same
# 50-rule who-may-call-whom policy (authz/testdata/bench/policy), same
# CheckRequest, same machine, one after the other:
#   1. fixed 2,000 rps for $DURATION: Check latency p50 / p99 / p99.9,
#      driven by hack/bench/authz/load (LOADGEN=sigil, the default: open
#      loop, latency from each call's intended send time, pre-marshalled
#      request, 4 connections) or by ghz (LOADGEN=ghz: --rps, -c 16, one
#      connection, latency from the actual send, as published before
#      session 6)
#   2. saturation at $CONC calls in flight for $DURATION: decisions/s,
#      driven by h2load (SATGEN=h2load, the default: nghttp2's C HTTP/2
#      generator, 4 connections × $CONC/4 streams, the gRPC request sent
#      as a fixed body; every answer is checked to be the size of one
#      verified allowed answer), by ghz (SATGEN=ghz, -c $CONC, as
#      published before session 8) or by `load -closed` (SATGEN=load).
#      A Go gRPC client spends about as much CPU per call as Sigil's server
#      (ghz ~70 µs, `load` 40-50 µs against Sigil's ~40), so on its one
#      core it, not the server, bounded Sigil's figure; h2load spends
#      ~10 µs, as Envoy would. The client's and the server's core use
#      during the run are printed beside each figure: the server's near
#      1.0 means the server bounded it.
# Sigil is measured twice: decision log off (like the plugin's default) and
# on (file sink, masked request logged).
# Server CPU per decision (user+system ticks of the server process during
# the saturation run, from /proc) is the figure least distorted when client
# and servers share the cores.
# By default the server under test is pinned to CPU 1 and the client to CPU 0
# (taskset; both servers alike), so client and server do not steal each
# other's core; with GOMAXPROCS following the affinity, each server runs on
# one core. With h2load, saturation is then bounded by the server (its
# core column near 1.0, the client's far below).
# Needs opa-envoy-plugin, ghz and h2load (hack/setup/40-opa-envoy-plugin.sh,
# hack/setup/41-ghz.sh, hack/setup/42-h2load.sh). ROUNDS=N measures the
# SERVERS list N times in turn (the VM's speed drifts by tens of percent
# over minutes; compare servers within a round). Figures are reported,
# never asserted.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
export SIGIL_TOOLS=${SIGIL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sigil/tools}
export PATH=$SIGIL_TOOLS:$PATH
DURATION=${DURATION:-10s}
RATE=${RATE:-2000}
CONC=${CONC:-32}
# CPU pinning (taskset lists; empty = no pinning): by default the server
# under test runs on CPU 1 and ghz on CPU 0, the same for every server.
SERVER_CPUS=${SERVER_CPUS-1}
CLIENT_CPUS=${CLIENT_CPUS-0}
# Which servers to measure (any of echo floor sigil sigil-log plugin
# plugin-gogc sigil-gogc1600 plugin-gogc1600 sigil-alt);
# sigil-alt is the sigil binary at $SIGIL_ALT_BIN, to compare two builds;
# floor is the gRPC health check on Sigil's server: what transport, the
# client and the machine cost without any policy; echo (LOADGEN=sigil only,
# no saturation run) is a TCP ping-pong served by `load -serve-echo`: the
# kernel loopback and Go netpoller without gRPC.
SERVERS=${SERVERS:-floor sigil sigil-log plugin plugin-gogc sigil-gogc1600 plugin-gogc1600}
LOADGEN=${LOADGEN:-sigil}
case $LOADGEN in sigil | ghz) ;; *) echo "LOADGEN=$LOADGEN: want sigil or ghz" >&2; exit 2 ;; esac
SATGEN=${SATGEN:-h2load}
case $SATGEN in h2load | ghz | load) ;; *) echo "SATGEN=$SATGEN: want h2load, ghz or load" >&2; exit 2 ;; esac
if [[ $SATGEN == h2load ]] && ((CONC % 4)); then echo "CONC=$CONC: SATGEN=h2load needs a multiple of 4 (4 connections)" >&2; exit 2; fi
ROUNDS=${ROUNDS:-1}
PAIRS=${PAIRS:-0}
# SIGIL_BIN: measure this sigil binary instead of building ./cmd/sigil.
# MAX_LOAD: wait (up to 5 min) until the 1-minute load average is below it
# before each measurement; the load is reported with every figure.
MAX_LOAD=${MAX_LOAD:-1.5}
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
"$ROOT/hack/setup/42-h2load.sh"
cd "$ROOT"
if [[ -n ${SIGIL_BIN:-} ]]; then cp "$SIGIL_BIN" "$WORK/sigil"; else go build -o "$WORK/sigil" ./cmd/sigil; fi
if [[ -n ${SIGIL_ALT_BIN:-} ]]; then
	cp "$SIGIL_ALT_BIN" "$WORK/sigil-alt"
elif [[ " $SERVERS " == *" sigil-alt "* ]]; then
	echo "sigil-alt needs SIGIL_ALT_BIN (the other sigil binary)" >&2
	exit 2
fi
go build -o "$WORK/load" ./hack/bench/authz/load
# taskset execs its command, so $! of a pinned server is the server's pid.
SERVER_PIN=() CLIENT_PIN=()
if [[ -n $SERVER_CPUS ]]; then SERVER_PIN=(taskset -c "$SERVER_CPUS"); fi
if [[ -n $CLIENT_CPUS ]]; then CLIENT_PIN=(taskset -c "$CLIENT_CPUS"); fi
ghzc() { "${CLIENT_PIN[@]}" ghz "$@"; }
loadc() { "${CLIENT_PIN[@]}" "$WORK/load" "$@"; }
wait_quiet() { # wait until the 1-minute load average is below MAX_LOAD
	for _ in $(seq 1 60); do
		awk -v m="$MAX_LOAD" '{exit !($1 < m)}' /proc/loadavg && return 0
		sleep 5
	done
	echo "load average stayed above $MAX_LOAD; measuring anyway" >&2
}
go run ./hack/bench/authz/protoset "$WORK/authz.protoset"
POLICY=$ROOT/authz/testdata/bench/policy
REQ=$ROOT/authz/testdata/bench/allow.json
CALL=envoy.service.auth.v3.Authorization/Check

wait_ready() { # addr
	for _ in $(seq 1 300); do
		if ghz --insecure --protoset "$WORK/authz.protoset" --call envoy.service.auth.v3.Authorization/Check \
			-D "$ROOT/authz/testdata/bench/allow.json" -n 1 -c 1 "$1" >/dev/null 2>&1; then return 0; fi
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
	wait_quiet
	cut -d' ' -f1-3 /proc/loadavg >"$WORK/$name-load"
	saturate "$name-warm" "$addr" 3s >/dev/null # warm up (and a first check of the answers)
	if [[ $LOADGEN == sigil ]]; then
		local call=(-call check -request "$REQ")
		if [[ $CALL == grpc.health.v1.Health/Check ]]; then call=(-call health); fi
		loadc "${call[@]}" -addr "$addr" -rate "$RATE" -duration "$DURATION" -warmup 3s \
			-json "$WORK/$name-rate.json" >"$WORK/$name-rate.txt"
	else
		ghzc --insecure --protoset "$WORK/authz.protoset" --call "$CALL" \
			-D "$REQ" --rps "$RATE" -c 16 -z "$DURATION" --format json "$addr" >"$WORK/$name-rate.json"
	fi
	local t0
	t0=$(cpu_ticks "$pid")
	saturate "$name" "$addr" "$DURATION" >"$WORK/$name-sat.txt"
	echo $(($(cpu_ticks "$pid") - t0)) >"$WORK/$name-ticks"
	echo "$CLIENT_TICKS" >"$WORK/$name-client-ticks"
}

children_ticks() { # user+system ticks of this shell's waited-for children
	awk '{print $16 + $17}' /proc/$$/stat
}

saturate() { # name addr duration: calls in flight $CONC, result in $WORK/name-sat.json;
	# sets CLIENT_TICKS to the generator's CPU (it runs in this shell, not a subshell)
	local name=$1 addr=$2 d=$3 c0
	c0=$(children_ticks)
	case $SATGEN in
	ghz)
		ghzc --insecure --protoset "$WORK/authz.protoset" --call "$CALL" \
			-D "$REQ" -c "$CONC" -z "$d" --format json "$addr" >"$WORK/$name-sat-ghz.json"
		CLIENT_TICKS=$(($(children_ticks) - c0))
		python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(json.dumps({"calls": s["count"], "rps": s["rps"], "errors": sum(v for k, v in s["statusCodeDistribution"].items() if k != "OK")}))' \
			"$WORK/$name-sat-ghz.json" >"$WORK/$name-sat.json"
		;;
	load)
		local call=(-call check -request "$REQ")
		if [[ $CALL == grpc.health.v1.Health/Check ]]; then call=(-call health); fi
		loadc "${call[@]}" -closed -addr "$addr" -conns 4 -workers "$CONC" -duration "$d" -warmup 0s -json "$WORK/$name-sat-load.json"
		CLIENT_TICKS=$(($(children_ticks) - c0))
		python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(json.dumps({"calls": s["calls"] + s["errors"], "rps": s["rate"], "errors": s["errors"]}))' \
			"$WORK/$name-sat-load.json" >"$WORK/$name-sat.json"
		;;
	h2load)
		local call=(-call check -request "$REQ") s0 s1
		if [[ $CALL == grpc.health.v1.Health/Check ]]; then call=(-call health); fi
		"$WORK/load" "${call[@]}" -grpc-body "$WORK/$name-body"
		s0=$("$WORK/load" "${call[@]}" -probe -addr "$addr" | awk '/^answer_bytes/ {print $2}')
		c0=$(children_ticks)
		"${CLIENT_PIN[@]}" h2load -c 4 -m $((CONC / 4)) -D "$d" -d "$WORK/$name-body" \
			-H 'content-type: application/grpc' -H 'te: trailers' --header=':method: POST' \
			"http://$addr/$CALL" >"$WORK/$name-sat-h2load.txt" 2>&1
		CLIENT_TICKS=$(($(children_ticks) - c0))
		s1=$("$WORK/load" "${call[@]}" -probe -addr "$addr" | awk '/^answer_bytes/ {print $2}')
		# Every answer must be one gRPC message of a verified answer's
		# size, probed before and after the run (Sigil's decision id may
		# gain a digit between them; otherwise the check is exact): an
		# error carries no message, a denial (overloaded included) a
		# larger one.
		python3 - "$WORK/$name-sat-h2load.txt" "$s0" "$s1" >"$WORK/$name-sat.json" <<'PY'
import json, re, sys
txt, s0, s1 = open(sys.argv[1]).read(), int(sys.argv[2]), int(sys.argv[3])
fin = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", txt)
req = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", txt)
codes = re.search(r"status codes: (\d+) 2xx", txt)
data = re.search(r"\(([0-9]+)\) data", txt)
if not (fin and req and codes and data):
    sys.exit("h2load output not understood:\n" + txt)
done, ok2xx, nbytes = int(req.group(2)), int(codes.group(1)), int(data.group(1))
if ok2xx and not (s0 * ok2xx <= nbytes <= s1 * ok2xx):
    sys.exit(f"h2load: {ok2xx} answers carried {nbytes} bytes of DATA, want {s0}-{s1} each: some were errors or denials\n{txt}")
print(json.dumps({"calls": done, "rps": float(fin.group(2)), "errors": done - ok2xx}))
PY
		;;
	esac
}

launch_sigil() { # name with_log port, then env assignments; sets LAUNCHED
	local name=$1 log=$2 port=$3
	shift 3
	{
		echo "listen: 127.0.0.1:$port"
		echo "policy:"
		echo "  dir: $POLICY"
		if [[ $log == yes ]]; then
			echo "decision_log:"
			echo "  file: $WORK/$name-decisions.log"
			echo "  max_bytes: 1073741824"
		fi
	} >"$WORK/$name.yaml"
	"${SERVER_PIN[@]}" env "$@" "${SIGIL_EXE:-$WORK/sigil}" authz run --config "$WORK/$name.yaml" 2>"$WORK/$name.err" &
	LAUNCHED=$!
	PIDS+=($LAUNCHED)
}

launch_plugin() { # name port, then env assignments; sets LAUNCHED
	local name=$1 port=$2
	shift 2
	"${SERVER_PIN[@]}" env "$@" opa-envoy-plugin run --server --addr=127.0.0.1:$((port + 100)) --diagnostic-addr=127.0.0.1:$((port + 200)) --log-level=error \
		--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:$port \
		--set=plugins.envoy_ext_authz_grpc.path=envoy/authz/allow "$POLICY" 2>"$WORK/$name.err" &
	LAUNCHED=$!
	PIDS+=($LAUNCHED)
}

start_sigil() { # name with_log, then env assignments
	local name=$1 log=$2
	shift 2
	launch_sigil "$name" "$log" 19191 "$@"
	measure "$name" 127.0.0.1:19191 "$LAUNCHED"
	kill "$LAUNCHED"; wait "$LAUNCHED" 2>/dev/null || true
}

start_echo() { # name: the loopback floor, fixed rate only
	local name=$1
	if [[ $LOADGEN != sigil ]]; then echo "echo needs LOADGEN=sigil" >&2; return 1; fi
	"${SERVER_PIN[@]}" "$WORK/load" -serve-echo 127.0.0.1:19194 2>"$WORK/$name.err" &
	PIDS+=($!)
	for _ in $(seq 1 100); do
		if (exec 3<>/dev/tcp/127.0.0.1/19194) 2>/dev/null; then break; fi
		sleep 0.1
	done
	wait_quiet
	cut -d' ' -f1-3 /proc/loadavg >"$WORK/$name-load"
	loadc -call echo -request "$REQ" -addr 127.0.0.1:19194 -rate "$RATE" -duration "$DURATION" -warmup 3s \
		-json "$WORK/$name-rate.json" >"$WORK/$name-rate.txt"
	kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

start_plugin() { # name, then env assignments
	local name=$1
	shift
	launch_plugin "$name" 19192 "$@"
	measure "$name" 127.0.0.1:19192 "$LAUNCHED"
	kill "$LAUNCHED"; wait "$LAUNCHED" 2>/dev/null || true
}

if ((PAIRS > 0)); then
	# Paired saturation: every server in SERVERS runs at once (each on the
	# pinned core, idle while another is measured), and short saturation
	# runs alternate between them PAIRS times, so servers are compared
	# seconds apart rather than minutes: this VM's speed drifts by tens of
	# percent over minutes, for all servers alike.
	port=19191 names=() addrs=() pids=()
	for s in $SERVERS; do
		case $s in
		sigil) launch_sigil "$s" no $port ;;
		sigil-log) launch_sigil "$s" yes $port ;;
		sigil-gogc1600) launch_sigil "$s" no $port GOGC=1600 ;;
		sigil-alt) SIGIL_EXE=$WORK/sigil-alt launch_sigil "$s" no $port ;;
		plugin) launch_plugin "$s" $port ;;
		plugin-gogc) launch_plugin "$s" $port GOGC=400 ;;
		plugin-gogc1600) launch_plugin "$s" $port GOGC=1600 ;;
		*) echo "PAIRS: server $s cannot be paired (want sigil, sigil-log, sigil-gogc1600, plugin, plugin-gogc, plugin-gogc1600)" >&2; exit 2 ;;
		esac
		names+=("$s") addrs+=("127.0.0.1:$port") pids+=("$LAUNCHED")
		port=$((port + 1))
	done
	for i in "${!names[@]}"; do
		wait_ready "${addrs[$i]}"
		saturate "${names[$i]}-warm" "${addrs[$i]}" 3s >/dev/null
	done
	wait_quiet
	cut -d' ' -f1-3 /proc/loadavg >"$WORK/pairs-load"
	for p in $(seq 1 "$PAIRS"); do
		for i in "${!names[@]}"; do
			t0=$(cpu_ticks "${pids[$i]}")
			saturate "${names[$i]}.p$p" "${addrs[$i]}" "$DURATION" >/dev/null
			echo $(($(cpu_ticks "${pids[$i]}") - t0)) >"$WORK/${names[$i]}.p$p-ticks"
			echo "$CLIENT_TICKS" >"$WORK/${names[$i]}.p$p-client-ticks"
		done
	done
	python3 - "$WORK" "$CONC" "$(getconf CLK_TCK)" "${names[*]}" "$PAIRS" "$DURATION" "$SATGEN" <<'PY'
import json, re, statistics, sys
work, conc, hz, names, pairs, dur, satgen = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), int(sys.argv[5]), sys.argv[6], sys.argv[7]
m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", dur)
secs = float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, None: 1}[m.group(2)]
rows = {n: [] for n in names}
for p in range(1, pairs + 1):
    for n in names:
        s = json.load(open(f"{work}/{n}.p{p}-sat.json"))
        ticks = int(open(f"{work}/{n}.p{p}-ticks").read())
        cticks = int(open(f"{work}/{n}.p{p}-client-ticks").read())
        rows[n].append((s["rps"], s["errors"], ticks / hz * 1e6 / max(1, s["calls"]), ticks / hz / secs, cticks / hz / secs))
head = "pair " + "".join(f"{n + ' dec/s':>22}{'µs/dec':>8}{'core':>6}{'client':>7}" for n in names)
head += "".join(f"{names[0] + '/' + n:>20}{'(CPU)':>7}" for n in names[1:])
print(head)
for p in range(pairs):
    line = f"{p + 1:>4} "
    for n in names:
        rps, errs, us, core, client = rows[n][p]
        line += f"{rps:>17.0f}{'' if not errs else f' E{errs}':>5}{us:>8.1f}{core:>6.2f}{client:>7.2f}"
    for n in names[1:]:
        a, b = rows[names[0]][p], rows[n][p]
        line += f"{a[0] / b[0]:>19.2f}×{b[2] / a[2]:>6.2f}×"
    print(line)
for n in names[1:]:
    r = [rows[names[0]][p][0] / rows[n][p][0] for p in range(pairs)]
    c = [rows[n][p][2] / rows[names[0]][p][2] for p in range(pairs)]
    print(f"{names[0]}/{n}: decisions/s median {statistics.median(r):.2f}× (min {min(r):.2f}, max {max(r):.2f}); CPU per decision median {statistics.median(c):.2f}× lower (min {min(c):.2f}, max {max(c):.2f})")
for n in names:
    print(f"{n}: decisions/s median {statistics.median(x[0] for x in rows[n]):.0f}, CPU per decision median {statistics.median(x[2] for x in rows[n]):.1f} µs, errors {sum(x[1] for x in rows[n])}")
sat = {"h2load": f"h2load, 4 connections × {int(conc) // 4} streams", "ghz": f"ghz -c {conc}", "load": f"load -closed, {conc} workers on 4 connections"}[satgen]
print(f"({pairs} pairs of {dur} saturation runs, {sat}; load average at start {open(work + '/pairs-load').read().strip()})")
PY
	exit 0
fi

# sigil authz run sets GC percent 400 (config gc_percent); the plugin is
# measured at Go's default and at the same setting.
for round in $(seq 1 "$ROUNDS"); do
	for s in $SERVERS; do
		n=$s.$round
		case $s in
		echo) start_echo "$n" ;;
		sigil) start_sigil "$n" no ;;
		floor) # gRPC health checks on the same server: transport, no policy
			echo '{}' >"$WORK/health.json"
			REQ=$WORK/health.json CALL=grpc.health.v1.Health/Check start_sigil "$n" no ;;
		sigil-log) start_sigil "$n" yes ;;
		plugin) start_plugin "$n" ;;
		plugin-gogc) start_plugin "$n" GOGC=400 ;;
		# Both at GOGC=1600 (heap goal ~64 MB here): fewer collections, and
		# idle stream workers' stacks are shrunk (and regrown) less often.
		sigil-gogc1600) start_sigil "$n" no GOGC=1600 ;;
		sigil-alt) SIGIL_EXE=$WORK/sigil-alt start_sigil "$n" no ;;
		plugin-gogc1600) start_plugin "$n" GOGC=1600 ;;
		*) echo "unknown server $s" >&2; exit 2 ;;
		esac
	done
done

python3 - "$WORK" "$RATE" "$CONC" "$(getconf CLK_TCK)" "$SERVERS" "$SERVER_CPUS" "$CLIENT_CPUS" "$LOADGEN" "$SATGEN" "$ROUNDS" "$DURATION" <<'PY'
import json, re, sys
work, rate, conc, hz, servers, scpu, ccpu, loadgen, satgen, rounds, dur = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(), sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9], int(sys.argv[10]), sys.argv[11]
m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", dur)
secs = float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, None: 1}[m.group(2)]
labels = {"sigil-alt": "sigil (SIGIL_ALT_BIN)", "echo": "echo: TCP loopback, no gRPC", "sigil-gogc1600": "sigil GOGC=1600", "plugin-gogc1600": "opa-envoy-plugin GOGC=1600", "floor": "floor: gRPC health check", "sigil": "sigil (no decision log)", "sigil-log": "sigil (decision log on)", "plugin": "opa-envoy-plugin", "plugin-gogc": "opa-envoy-plugin GOGC=400"}
def pct(lat, p):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(len(lat) * p))] / 1e6
# server / client cores: each one's CPU during the saturation run over its
# length; the server's near 1.0 (its pinned core) means it bounded the figure.
print(f"{'server':<32}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}{'late p99':>10}   {'sat. decisions/s':>17}{'errors':>8}{'CPU us/decision':>17}{'server core':>12}{'client core':>12}   load avg (1/5/15 min)")
for rnd in range(1, rounds + 1):
    for base in servers:
        name = f"{base}.{rnd}"
        r = json.load(open(f"{work}/{name}-rate.json"))
        if loadgen == "sigil":
            # load: latency from the intended send time; "late" is the
            # client's own pacing delay (included in the latency)
            q = r["latency"]
            p50, p99, p999, errs, late = q["p50_ms"], q["p99_ms"], q["p999_ms"], r["errors"], f"{r['lateness']['p99_ms']:.3f}"
        else:
            lat = [d["latency"] for d in r.get("details", []) if not d.get("error")]
            p50, p99, p999 = pct(lat, .5), pct(lat, .99), pct(lat, .999)
            errs, late = sum(v for k, v in r["statusCodeDistribution"].items() if k != "OK"), "-"
        if base == "echo":  # no saturation run
            sat = f"{'-':>17}{'-':>8}{'-':>17}{'-':>12}{'-':>12}"
        else:
            s = json.load(open(f"{work}/{name}-sat.json"))
            ticks = int(open(f"{work}/{name}-ticks").read())
            cticks = int(open(f"{work}/{name}-client-ticks").read())
            cpu_us = ticks / hz * 1e6 / max(1, s["calls"])
            sat = f"{s['rps']:>17.0f}{s['errors']:>8}{cpu_us:>17.1f}{ticks / hz / secs:>12.2f}{cticks / hz / secs:>12.2f}"
        load = open(f"{work}/{name}-load").read().strip()
        label = labels[base] + (f" #{rnd}" if rounds > 1 else "")
        print(f"{label:<32}{p50:>9.3f}{p99:>9.3f}{p999:>10.3f}{errs:>8}{late:>10}   {sat}   {load}")
pinning = f"server pinned to CPU {scpu}, client to CPU {ccpu}" if scpu or ccpu else "no pinning: client and server share both cores"
fixed = "hack/bench/authz/load, 4 connections, latency from the intended send time" if loadgen == "sigil" else "ghz -c 16"
sat = {"h2load": f"h2load, 4 connections × {int(conc) // 4} streams", "ghz": f"ghz -c {conc}", "load": f"load -closed, {conc} workers on 4 connections"}[satgen]
print(f"(fixed rate {rate} rps, {fixed}; saturation {sat} for {dur}; {pinning})")
PY
