package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigilhq/sigil/internal/testrun"
)

// run serves cfg on a loopback port until the test ends and returns the
// base URL.
func run(t *testing.T, cfg Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = lis
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, s.Run)
	return "http://" + lis.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_test_total", Help: "test"}))
	var notReady error
	base := run(t, Config{Gatherer: reg, Ready: func(context.Context) error { return notReady }})
	tests := []struct {
		name, path string
		notReady   error
		code       int
		body       string
	}{
		{name: "live", path: "/live", code: 200, body: "ok"},
		{name: "ready", path: "/ready", code: 200, body: "ready"},
		{name: "not ready names the reason", path: "/ready", notReady: errors.New("no active key"), code: 503, body: "not ready: no active key"},
		{name: "live while not ready", path: "/live", notReady: errors.New("no active key"), code: 200, body: "ok"},
		{name: "metrics", path: "/metrics", code: 200, body: "sigil_test_total 0"},
		{name: "no pprof unless asked", path: "/debug/pprof/", code: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notReady = tt.notReady
			code, body := get(t, base+tt.path)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Fatalf("GET %s = %d %q, want %d with %q", tt.path, code, body, tt.code, tt.body)
			}
		})
	}
}

func TestOptionalParts(t *testing.T) {
	base := run(t, Config{PProf: true})
	if code, _ := get(t, base+"/metrics"); code != 404 {
		t.Errorf("/metrics without a gatherer = %d, want 404", code)
	}
	if code, _ := get(t, base+"/ready"); code != 200 {
		t.Errorf("/ready without a readiness check = %d, want 200", code)
	}
	if code, body := get(t, base+"/debug/pprof/cmdline"); code != 200 || body == "" {
		t.Errorf("/debug/pprof/cmdline = %d %q", code, body)
	}
}

func TestRunListensOnAddress(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without address or listener succeeded")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := New(Config{Address: busy.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Run on a busy address = %v, want an error naming it", err)
	}
}
