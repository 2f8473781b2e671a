//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
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

// slowHealthServer answers every call after delay.
func slowHealthServer(t *testing.T, delay time.Duration) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		time.Sleep(delay)
		return h(ctx, req)
	}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func TestSaturateCountsOnlyTheMeasuredWindow(t *testing.T) {
	// 4 workers on a server that takes 20 ms a call: at most 4 × 300/20 =
	// 60 answers fit in the 300 ms window, whatever the warm-up did.
	addr := slowHealthServer(t, 20*time.Millisecond)
	jsonPath := filepath.Join(t.TempDir(), "s.json")
	var out bytes.Buffer
	o := options{addr: addr, call: "health", duration: 300 * time.Millisecond, warmup: 200 * time.Millisecond,
		timeout: 5 * time.Second, conns: 2, workers: 4, gogc: 100, closed: true, jsonOut: jsonPath}
	r, err := saturate(context.Background(), o, &out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls > 60 || r.Calls < 8 || r.Errors != 0 {
		t.Errorf("calls = %d, errors = %d: want 8..60 answers (4 workers × 20 ms calls × 300 ms) and no errors", r.Calls, r.Errors)
	}
	if r.Rate != float64(r.Calls)/0.3 {
		t.Errorf("rate %.1f/s for %d calls in 300 ms", r.Rate, r.Calls)
	}
	if r.Service.P50 < 20 || r.ClientCores < 0 {
		t.Errorf("service %+v (want p50 ≥ 20 ms), client cores %.3f", r.Service, r.ClientCores)
	}
	if !strings.Contains(out.String(), "closed loop") {
		t.Errorf("text output lacks the closed-loop line:\n%s", out.String())
	}
}

func TestSaturateCountsErrors(t *testing.T) {
	addr := healthServer(t, healthpb.HealthCheckResponse_NOT_SERVING)
	r, err := saturate(context.Background(), options{addr: addr, call: "health", duration: 200 * time.Millisecond,
		timeout: 5 * time.Second, conns: 1, workers: 2, gogc: 100, closed: true}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls != 0 || r.Errors == 0 || r.ErrorKinds["other: health NOT_SERVING"] != r.Errors {
		t.Errorf("calls %d, errors %d %v: want every call counted as NOT_SERVING", r.Calls, r.Errors, r.ErrorKinds)
	}
}

func TestGRPCBodyIsOneLengthPrefixedMessage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "body")
	if err := writeGRPCBody(options{call: "check", request: "../../../../authz/testdata/bench/allow.json"}, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := checkRequest(options{request: "../../../../authz/testdata/bench/allow.json"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 5+len(want) || b[0] != 0 || int(binary.BigEndian.Uint32(b[1:5])) != len(want) || !bytes.Equal(b[5:], want) {
		t.Fatalf("body %d bytes, prefix %x: want a 0 flag, length %d and the request", len(b), b[:min(5, len(b))], len(want))
	}
	if err := writeGRPCBody(options{call: "check"}, path); err == nil {
		t.Error("-grpc-body without -request: no error")
	}
}

func TestProbeVerifiesAndSizesTheAnswer(t *testing.T) {
	var out bytes.Buffer
	o := options{addr: healthServer(t, healthpb.HealthCheckResponse_SERVING), call: "health", timeout: 5 * time.Second}
	if err := probe(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	// HealthCheckResponse{status: SERVING} is 2 bytes.
	if got := out.String(); got != "answer_bytes 7\n" {
		t.Errorf("probe printed %q, want answer_bytes 7", got)
	}
	o.addr = healthServer(t, healthpb.HealthCheckResponse_NOT_SERVING)
	if err := probe(context.Background(), o, &out); err == nil {
		t.Error("probe of a NOT_SERVING server: no error")
	}
}
