//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/sigilhq/sigil/internal/benchcpu"
)

// maxSamples bounds the preallocated sample slices (rate × duration).
const maxSamples = 10_000_000

type options struct {
	addr, call, request string
	rate                float64
	duration, warmup    time.Duration
	timeout             time.Duration
	conns, workers      int
	wantCode            int
	gogc                int
	jsonOut, samples    string
	traceOut            string
	serveEcho           string
	closed, probe       bool
	grpcBody            string
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:19191", "server address (host:port)")
	flag.StringVar(&o.call, "call", "check", "check (ext_authz Check), health (gRPC health Check) or echo (TCP ping-pong with -serve-echo)")
	flag.StringVar(&o.request, "request", "", "CheckRequest as protojson (required for -call check; sizes the echo request)")
	flag.Float64Var(&o.rate, "rate", 2000, "calls per second, open loop")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "time at the same rate before measuring (not recorded)")
	flag.DurationVar(&o.timeout, "timeout", time.Second, "per-call deadline")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections (HTTP/2) the workers share")
	flag.IntVar(&o.workers, "workers", 64, "calls in flight at most (a scheduled call waits for a free worker and counts from its intended time)")
	flag.IntVar(&o.wantCode, "want-code", 0, "google.rpc code a Check must answer (0 OK, 7 PERMISSION_DENIED); others count as errors")
	flag.IntVar(&o.gogc, "gogc", -1, "the client's GC percent; -1: off (with a 1 GiB memory limit), so the client's own GC stays out of the figures")
	flag.StringVar(&o.jsonOut, "json", "", "also write the result as JSON to this file")
	flag.StringVar(&o.samples, "samples", "", "write every measured call as CSV to this file (intended send time, lateness, service time, latency)")
	flag.StringVar(&o.traceOut, "trace", "", "write the client's Go execution trace (warm-up included) to this file")
	flag.BoolVar(&o.closed, "closed", false, "closed loop instead of -rate: each of -workers calls again as soon as its call answers; reports the sustained rate, service time and the client's CPU")
	flag.BoolVar(&o.probe, "probe", false, "make one verified call and print the answer's gRPC message size (answer_bytes N)")
	flag.StringVar(&o.grpcBody, "grpc-body", "", "write the request of -call as a gRPC length-prefixed message to this file and exit (a body for h2load -d)")
	flag.StringVar(&o.serveEcho, "serve-echo", "", "instead of calling: serve the echo protocol on this address until SIGINT/SIGTERM")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case o.serveEcho != "":
		err = serveEcho(ctx, o.serveEcho)
	case o.grpcBody != "":
		err = writeGRPCBody(o, o.grpcBody)
	case o.probe:
		err = probe(ctx, o, os.Stdout)
	case o.closed:
		var res Saturation
		if res, err = saturate(ctx, o, os.Stdout); err == nil {
			err = writeJSON(o.jsonOut, res)
		}
	default:
		err = run(ctx, o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// Result is what one run measured.
type Result struct {
	Call        string  `json:"call"`
	Addr        string  `json:"addr"`
	Rate        float64 `json:"rate"`
	Duration    string  `json:"duration"`
	Conns       int     `json:"conns"`
	Workers     int     `json:"workers"`
	StartUnixNS int64   `json:"start_unix_ns"` // intended send time of the first measured call
	Calls       int     `json:"calls"`
	Errors      int     `json:"errors"`
	// ErrorKinds counts errors by gRPC status code or kind.
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	// Latency runs from the intended send time to the answer (coordinated
	// omission corrected); Service from the actual send; Lateness is the
	// client's own pacing delay (actual − intended send). Failed calls are
	// left out.
	Latency  Quantiles `json:"latency"`
	Service  Quantiles `json:"service"`
	Lateness Quantiles `json:"lateness"`
	// AchievedRate is measured calls over the span from the first intended
	// send to the last answer.
	AchievedRate float64 `json:"achieved_rate"`
	ClientCPUUS  float64 `json:"client_cpu_us_per_call"`
	ClientGCs    uint64  `json:"client_gc_cycles"`
}

type job struct {
	i  int
	at time.Time
}

// sample is one measured call; zero sent means never sent.
type sample struct {
	at, sent, done time.Time
	failed         bool
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.rate <= 0 || o.duration <= 0 || o.warmup < 0 || o.timeout <= 0 || o.conns < 1 || o.workers < 1 {
		return errors.New("-rate, -duration, -timeout, -conns and -workers must be positive, -warmup not negative")
	}
	interval := time.Duration(math.Round(1e9 / o.rate))
	if interval <= 0 {
		return fmt.Errorf("-rate %v: interval under 1ns", o.rate)
	}
	warm, n := int(o.warmup/interval), int(o.duration/interval)
	if n < 1 || warm+n > maxSamples {
		return fmt.Errorf("-rate × (-warmup + -duration) = %d calls: want 1 to %d", warm+n, maxSamples)
	}
	callers, closeAll, err := openCallers(ctx, o)
	if err != nil {
		return err
	}
	defer closeAll()
	stopTrace, err := setupClient(o)
	if err != nil {
		return err
	}
	defer stopTrace()

	samples := make([]sample, n)
	kinds := make([]map[string]int, o.workers)
	jobs := make(chan job, o.workers)
	done := make(chan struct{})
	for w := range o.workers {
		kinds[w] = map[string]int{}
		go func() {
			defer func() { done <- struct{}{} }()
			c := callers[w]
			for j := range jobs {
				sent, end, err := timedCall(ctx, c, o.timeout)
				if j.i < warm {
					continue
				}
				s := &samples[j.i-warm]
				*s = sample{at: j.at, sent: sent, done: end, failed: err != nil}
				if err != nil {
					kinds[w][errKind(err)]++
				}
			}
		}()
	}

	p, err := newPacer(interval, 50*time.Millisecond)
	if err != nil {
		close(jobs)
		return err
	}
	defer p.close()
	var cpu0 time.Duration
	var gc0 uint64
	i := 0
dispatch:
	for i < warm+n {
		k, err := p.wait()
		if err != nil {
			close(jobs)
			return err
		}
		for ; k > 0 && i < warm+n; k-- {
			if i == warm {
				cpu0, gc0 = benchcpu.Now(), gcCycles()
			}
			select {
			case jobs <- job{i: i, at: p.at(i)}:
			case <-ctx.Done():
				break dispatch
			}
			i++
		}
	}
	close(jobs)
	for range o.workers {
		<-done
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cpu, gcs := benchcpu.Now()-cpu0, gcCycles()-gc0

	res := summarize(o, samples, kinds)
	res.ClientCPUUS = float64(cpu.Microseconds()) / float64(n)
	res.ClientGCs = gcs
	fmt.Fprint(out, res.text())
	if err := writeJSON(o.jsonOut, res); err != nil {
		return err
	}
	if o.samples != "" {
		if err := writeSamples(o.samples, samples); err != nil {
			return err
		}
	}
	return nil
}

// timedCall makes one call with its deadline and checks the answer; sent
// and end bound the call, not the check.
func timedCall(ctx context.Context, c caller, timeout time.Duration) (sent, end time.Time, err error) {
	sent = time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err = c.call(cctx)
	end = time.Now()
	cancel()
	if err == nil {
		err = c.check()
	}
	return sent, end, err
}

// openCallers dials the target and makes one caller per worker; closeAll
// releases them and the target.
func openCallers(ctx context.Context, o options) (callers []caller, closeAll func(), err error) {
	tg, err := newTarget(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	closeAll = func() {
		for _, c := range callers {
			c.close()
		}
		tg.close()
	}
	for w := range o.workers {
		c, err := tg.caller(w)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		callers = append(callers, c)
	}
	return callers, closeAll, nil
}

// setupClient applies -gogc and starts -trace; the function it returns
// stops the trace.
func setupClient(o options) (stop func(), err error) {
	debug.SetGCPercent(o.gogc)
	if o.gogc < 0 {
		debug.SetMemoryLimit(1 << 30)
	}
	if o.traceOut == "" {
		return func() {}, nil
	}
	f, err := os.Create(o.traceOut)
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start trace: %w", err)
	}
	return func() { trace.Stop(); f.Close() }, nil
}

// writeJSON writes v to path as indented JSON; no path, no file.
func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func summarize(o options, samples []sample, kinds []map[string]int) Result {
	res := Result{Call: o.call, Addr: o.addr, Rate: o.rate, Duration: o.duration.String(), Conns: o.conns, Workers: o.workers,
		Calls: len(samples), StartUnixNS: samples[0].at.UnixNano(), ErrorKinds: map[string]int{}}
	lat := make([]time.Duration, 0, len(samples))
	svc := make([]time.Duration, 0, len(samples))
	late := make([]time.Duration, 0, len(samples))
	var last time.Time
	for _, s := range samples {
		if s.done.After(last) {
			last = s.done
		}
		if s.failed || s.sent.IsZero() {
			continue
		}
		lat = append(lat, s.done.Sub(s.at))
		svc = append(svc, s.done.Sub(s.sent))
		late = append(late, s.sent.Sub(s.at))
	}
	for _, m := range kinds {
		for k, v := range m {
			res.ErrorKinds[k] += v
			res.Errors += v
		}
	}
	res.Latency, res.Service, res.Lateness = quantiles(lat), quantiles(svc), quantiles(late)
	if span := last.Sub(samples[0].at); span > 0 {
		res.AchievedRate = float64(len(samples)) / span.Seconds()
	}
	return res
}

func (r Result) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d calls at %.0f/s over %s (achieved %.0f/s), %d connections, %d workers, %d errors",
		r.Call, r.Addr, r.Calls, r.Rate, r.Duration, r.AchievedRate, r.Conns, r.Workers, r.Errors)
	for k, v := range r.ErrorKinds {
		fmt.Fprintf(&b, " [%s: %d]", k, v)
	}
	fmt.Fprintf(&b, "\n  latency from intended send: %s\n  service time from send:     %s\n  client send lateness:       %s\n", r.Latency, r.Service, r.Lateness)
	fmt.Fprintf(&b, "  client CPU %.1f µs/call, %d client GC cycles\n", r.ClientCPUUS, r.ClientGCs)
	return b.String()
}

func writeSamples(path string, samples []sample) error {
	var b strings.Builder
	b.WriteString("intended_unix_ns,lateness_us,service_us,latency_us,failed\n")
	for _, s := range samples {
		if s.sent.IsZero() {
			continue
		}
		fmt.Fprintf(&b, "%d,%.1f,%.1f,%.1f,%t\n", s.at.UnixNano(), us(s.sent.Sub(s.at)), us(s.done.Sub(s.sent)), us(s.done.Sub(s.at)), s.failed)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
