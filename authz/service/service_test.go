package service

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigilhq/sigil/authz/authzconfig"
)

const allowGET = "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n"

func policyDir(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func config(t *testing.T, yaml string) authzconfig.Config {
	t.Helper()
	c, err := authzconfig.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs a Service on a loopback port until the test ends; stop
// returns what Run returned.
func start(t *testing.T, cfg Config) (svc *Service, client authv3.AuthorizationClient, stop func() error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = lis
	svc, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var stopped bool
	var runErr error
	stop = func() error {
		if !stopped {
			stopped = true
			conn.Close()
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return svc, authv3.NewAuthorizationClient(conn), stop
}

func check(t *testing.T, c authv3.AuthorizationClient, method string) code.Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: "/", Headers: map[string]string{"authorization": "Bearer s3cret"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return code.Code(resp.GetStatus().GetCode())
}

func TestRunServesLogsAndCounts(t *testing.T) {
	dir := policyDir(t, allowGET)
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	reg := prometheus.NewRegistry()
	svc, client, stop := start(t, Config{
		Config:  config(t, "policy:\n  dir: "+dir+"\nshadow:\n  dir: "+policyDir(t, "package envoy.authz\n\ndefault allow := false\n")+"\ndecision_log:\n  file: "+logPath+"\n"),
		Metrics: reg,
	})
	if got := check(t, client, "GET"); got != code.Code_OK {
		t.Errorf("GET = %v, want OK", got)
	}
	if got := check(t, client, "POST"); got != code.Code_PERMISSION_DENIED {
		t.Errorf("POST = %v, want denied", got)
	}
	if err := svc.Ready(context.Background()); err != nil {
		t.Errorf("Ready = %v", err)
	}
	if n := counter(t, reg, "sigil_authz_shadow_disagreements_total"); n != 1 {
		t.Errorf("shadow disagreements = %v, want 1", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(raw), "\n"); lines != 2 || strings.Contains(string(raw), "s3cret") {
		t.Fatalf("decision log: %d lines (want 2), secret masked: %v", lines, !strings.Contains(string(raw), "s3cret"))
	}
}

// counter is the value of the one series of the counter name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no single series %s in the registry", name)
	return 0
}

func TestRunWithoutMetrics(t *testing.T) {
	_, client, stop := start(t, Config{Config: config(t, "policy:\n  dir: "+policyDir(t, allowGET)+"\n")})
	if got := check(t, client, "GET"); got != code.Code_OK {
		t.Errorf("GET = %v, want OK", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRunRefusesAPolicyThatDoesNotLoad(t *testing.T) {
	tests := []struct{ name, yaml string }{
		{"enforced", "policy:\n  dir: " + policyDir(t, "package envoy.authz\n\nallow if {\n") + "\n"},
		{"shadow", "policy:\n  dir: " + policyDir(t, allowGET) + "\nshadow:\n  bundle_file: " + filepath.Join(t.TempDir(), "missing.tar.gz") + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			svc, err := New(Config{Config: config(t, tt.yaml), Listener: lis})
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Run(context.Background()); err == nil || !strings.Contains(err.Error(), tt.name+" policy") {
				t.Fatalf("Run = %v, want an error naming the %s policy", err, tt.name)
			}
			if c, err := net.Dial("tcp", lis.Addr().String()); err == nil {
				c.Close()
				t.Fatal("the listener was left open")
			}
		})
	}
}

// A bundle service that is not up yet does not stop the server: it denies
// (and is not ready) until the bundle loads.
func TestRunWaitsForABundleURL(t *testing.T) {
	bundles := httptest.NewServer(http.NotFoundHandler())
	defer bundles.Close()
	svc, client, stop := start(t, Config{Config: config(t, "policy:\n  bundle_url: "+bundles.URL+"/b.tar.gz\n")})
	if got := check(t, client, "GET"); got != code.Code_PERMISSION_DENIED {
		t.Errorf("GET without a policy = %v, want denied", got)
	}
	if err := svc.Ready(context.Background()); err == nil {
		t.Error("ready without a policy")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRunListensOnTheConfiguredAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	svc, err := New(Config{Config: config(t, "listen: "+busy.Addr().String()+"\npolicy:\n  dir: "+policyDir(t, allowGET)+"\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "authz listen") {
		t.Fatalf("Run on a busy address = %v", err)
	}
}
