//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sigilhq/sigil/internal/benchcpu"
)

// maxClosedSamples bounds each worker's recorded service times in a
// closed-loop run; calls past it are still counted, not timed.
const maxClosedSamples = 2_000_000

// Saturation is what a closed-loop run measured: every worker calls again
// as soon as its last call answers, so the rate is what the server (or
// the client) can sustain with -workers calls in flight.
type Saturation struct {
	Call     string `json:"call"`
	Addr     string `json:"addr"`
	Duration string `json:"duration"`
	Conns    int    `json:"conns"`
	Workers  int    `json:"workers"`
	// Calls answered inside the measured window (warm-up excluded).
	Calls      int            `json:"calls"`
	Errors     int            `json:"errors"`
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	Rate       float64        `json:"rate"` // Calls / measured window
	Service    Quantiles      `json:"service"`
	// ClientCPUUS is the client's CPU per answered call; ClientCores the
	// client's CPU over the window in cores: near the client's own core
	// count, the client and not the server bounds Rate.
	ClientCPUUS float64 `json:"client_cpu_us_per_call"`
	ClientCores float64 `json:"client_cores"`
}

type closedWorker struct {
	calls, errors int
	kinds         map[string]int
	service       []time.Duration
}

// saturate runs o.workers callers back to back for o.warmup + o.duration
// and counts the calls answered in the last o.duration.
func saturate(ctx context.Context, o options, out io.Writer) (Saturation, error) {
	if o.duration <= 0 || o.warmup < 0 || o.timeout <= 0 || o.conns < 1 || o.workers < 1 {
		return Saturation{}, errors.New("-duration, -timeout, -conns and -workers must be positive, -warmup not negative")
	}
	callers, closeAll, err := openCallers(ctx, o)
	if err != nil {
		return Saturation{}, err
	}
	defer closeAll()
	stopTrace, err := setupClient(o)
	if err != nil {
		return Saturation{}, err
	}
	defer stopTrace()

	from := time.Now().Add(o.warmup)
	until := from.Add(o.duration)
	ws := make([]closedWorker, o.workers)
	done := make(chan struct{})
	for w := range ws {
		go func() {
			defer func() { done <- struct{}{} }()
			ws[w] = closedWorker{kinds: map[string]int{}}
			cw, c := &ws[w], callers[w]
			for ctx.Err() == nil && time.Now().Before(until) {
				sent, end, err := timedCall(ctx, c, o.timeout)
				if end.Before(from) || !end.Before(until) {
					continue
				}
				if err != nil {
					cw.errors++
					cw.kinds[errKind(err)]++
					continue
				}
				cw.calls++
				if len(cw.service) < maxClosedSamples {
					cw.service = append(cw.service, end.Sub(sent))
				}
			}
		}()
	}
	var cpu0, cpu1 time.Duration
	select {
	case <-time.After(time.Until(from)):
		cpu0 = benchcpu.Now()
	case <-ctx.Done():
	}
	select {
	case <-time.After(time.Until(until)):
		cpu1 = benchcpu.Now()
	case <-ctx.Done():
	}
	for range ws {
		<-done
	}
	if err := ctx.Err(); err != nil {
		return Saturation{}, err
	}
	res := Saturation{Call: o.call, Addr: o.addr, Duration: o.duration.String(), Conns: o.conns, Workers: o.workers, ErrorKinds: map[string]int{}}
	var svc []time.Duration
	for _, w := range ws {
		res.Calls += w.calls
		res.Errors += w.errors
		for k, v := range w.kinds {
			res.ErrorKinds[k] += v
		}
		svc = append(svc, w.service...)
	}
	res.Rate = float64(res.Calls) / o.duration.Seconds()
	res.Service = quantiles(svc)
	cpu := cpu1 - cpu0
	res.ClientCores = cpu.Seconds() / o.duration.Seconds()
	if res.Calls > 0 {
		res.ClientCPUUS = float64(cpu.Microseconds()) / float64(res.Calls)
	}
	fmt.Fprint(out, res.text())
	return res, nil
}

func (r Saturation) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: closed loop, %d workers on %d connections, %s: %d calls (%.0f/s), %d errors",
		r.Call, r.Addr, r.Workers, r.Conns, r.Duration, r.Calls, r.Rate, r.Errors)
	for k, v := range r.ErrorKinds {
		fmt.Fprintf(&b, " [%s: %d]", k, v)
	}
	fmt.Fprintf(&b, "\n  service time: %s\n  client CPU %.1f µs/call, %.2f cores\n", r.Service, r.ClientCPUUS, r.ClientCores)
	return b.String()
}
