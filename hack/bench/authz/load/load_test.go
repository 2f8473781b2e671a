//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestQuantilesNearestRank(t *testing.T) {
	d := make([]time.Duration, 1000)
	for i := range d {
		d[len(d)-1-i] = time.Duration(i+1) * time.Millisecond // 1..1000 ms, reversed
	}
	q := quantiles(d)
	want := Quantiles{P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000, Mean: 500.5}
	if q != want {
		t.Fatalf("quantiles = %+v, want %+v", q, want)
	}
	if (quantiles(nil) != Quantiles{}) {
		t.Fatal("quantiles of no samples is not zero")
	}
}

// healthServer serves gRPC health with the given status until the test ends.
func healthServer(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", st)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveEcho(ctx, addr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveEcho = %v", err)
		}
	})
	for range 100 { // serveEcho listens in its goroutine
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

func TestRunCountsCallsAndErrors(t *testing.T) {
	for _, tc := range []struct {
		name, call, addr string
		wantErrors       bool
	}{
		{"health serving", "health", healthServer(t, healthpb.HealthCheckResponse_SERVING), false},
		{"health not serving counts errors", "health", healthServer(t, healthpb.HealthCheckResponse_NOT_SERVING), true},
		{"echo", "echo", echoServer(t), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jsonPath := filepath.Join(t.TempDir(), "r.json")
			samplesPath := filepath.Join(t.TempDir(), "s.csv")
			var out bytes.Buffer
			err := run(context.Background(), options{
				addr: tc.addr, call: tc.call, rate: 1000, duration: 300 * time.Millisecond, warmup: 100 * time.Millisecond,
				timeout: 5 * time.Second, conns: 2, workers: 8, gogc: 100, jsonOut: jsonPath, samples: samplesPath,
			}, &out)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			var r Result
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			if r.Calls != 300 {
				t.Errorf("calls = %d, want 300 (1000/s for 300ms)", r.Calls)
			}
			if got := r.Errors == r.Calls; got != tc.wantErrors || (!tc.wantErrors && r.Errors != 0) {
				t.Errorf("errors = %d of %d (%v), want all: %v", r.Errors, r.Calls, r.ErrorKinds, tc.wantErrors)
			}
			if !tc.wantErrors && (r.Latency.P50 <= 0 || r.Latency.Max < r.Service.Max || r.Latency.P50 < r.Lateness.P50) {
				t.Errorf("latency %+v, service %+v, lateness %+v: latency must include lateness", r.Latency, r.Service, r.Lateness)
			}
			// The schedule is fixed: 300 calls span 299 intervals whatever the
			// client's delays, so the rate is 1000/s give or take the
			// last answer's latency (loose: the box may be loaded).
			if r.AchievedRate < 250 || r.AchievedRate > 1010 {
				t.Errorf("achieved rate %.0f/s, want about 1000/s", r.AchievedRate)
			}
			csv, err := os.ReadFile(samplesPath)
			if err != nil {
				t.Fatal(err)
			}
			if lines := strings.Count(string(csv), "\n"); lines != 301 {
				t.Errorf("samples file has %d lines, want a header and 300", lines)
			}
			if !strings.Contains(out.String(), "latency from intended send") {
				t.Errorf("text output lacks the latency line:\n%s", out.String())
			}
		})
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	for _, o := range []options{
		{call: "check", rate: 0, duration: time.Second, timeout: time.Second, conns: 1, workers: 1},
		{call: "check", rate: 1e6, duration: time.Hour, timeout: time.Second, conns: 1, workers: 1},
		{call: "nope", rate: 10, duration: time.Second, timeout: time.Second, conns: 1, workers: 1},
		{call: "check", rate: 10, duration: time.Second, timeout: time.Second, conns: 1, workers: 1}, // no -request
	} {
		if err := run(context.Background(), o, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%+v) = nil, want an error", o)
		}
	}
}
