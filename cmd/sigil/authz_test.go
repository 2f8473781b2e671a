package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigilhq/sigil/internal/e2e"
)

func freeAddr(t *testing.T) string { return e2e.FreeAddr(t) }

func check(t *testing.T, client authv3.AuthorizationClient, src, dst, method, path string) code.Code {
	t.Helper()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: src},
		Destination: &authv3.AttributeContext_Peer{Principal: dst},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: map[string]string{"authorization": "Bearer dev-secret"},
		}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return code.Code(resp.GetStatus().GetCode())
}

// TestDevAuthz runs what `sigil dev` runs: seeded policies, decisions,
// a verifiable decision log, then audit verify and policy replay over it.
func TestDevAuthz(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := devAuthz(dir, spiffeid.RequireTrustDomainFromString("example.org"), lis, slog.New(slog.DiscardHandler), nil)
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
	client := authv3.NewAuthorizationClient(conn)
	const frontend, cart = "spiffe://example.org/ns/shop/sa/frontend", "spiffe://example.org/ns/shop/sa/cart"
	if got := check(t, client, frontend, cart, "GET", "/items/7"); got != code.Code_OK {
		t.Errorf("frontend GET /items/7 = %v, want OK from the seeded shop example", got)
	}
	if got := check(t, client, cart, frontend, "GET", "/items/7"); got != code.Code_PERMISSION_DENIED {
		t.Errorf("cart -> frontend = %v, want denied", got)
	}
	conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(dir, "decisions.log")
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("dev-secret")) {
		t.Fatal("bearer token in the decision log")
	}

	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	// The dev runner does not sign checkpoints (yet): the chain alone.
	root.SetArgs([]string{"audit", "verify", "--allow-unsigned", logPath})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "ok: 2 decisions") {
		t.Fatalf("audit verify = %v: %s", err, out.String())
	}

	// A candidate that allows nothing turns the one allow into a deny.
	cand := t.TempDir()
	if err := os.WriteFile(filepath.Join(cand, "p.rego"), []byte("package envoy.authz\n\ndefault allow := false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	root = newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"policy", "replay", "--log", logPath, "--policy", cand})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "allow -> deny:   1") {
		t.Fatalf("policy replay = %v: %s", err, out.String())
	}

	// Tampering is caught and named.
	lines := strings.SplitAfter(string(raw), "\n")
	lines[0] = strings.Replace(lines[0], `"result":"allow"`, `"result":"deny"`, 1)
	if err := os.WriteFile(logPath, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	root = newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"audit", "verify", logPath})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "decisions.log:1:") {
		t.Fatalf("audit verify of an edited log = %v", err)
	}
}

func TestAuthzRunRejectsUnknownKey(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "authz.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\npolicy:\n  dir: x\n  watch: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	root.SetArgs([]string{"authz", "run", "--config", cfg})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), `line 4: unknown key "watch"`) {
		t.Fatalf("authz run with unknown key = %v", err)
	}
}

// TestAuthzRun runs `sigil authz run` as an operator would: checks answered,
// /live, /ready and /metrics on the health address, a clean stop.
func TestAuthzRun(t *testing.T) {
	dir := t.TempDir()
	if err := seedPolicies(filepath.Join(dir, "policies")); err != nil {
		t.Fatal(err)
	}
	addr, healthAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "authz.yaml")
	yaml := "listen: " + addr + "\nhealth_address: " + healthAddr + "\npolicy:\n  dir: " + filepath.Join(dir, "policies") + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"authz", "run", "--config", cfg})
	root.SetErr(io.Discard)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	get := func(path string) (int, string) { return getHealth(t, healthAddr, path) }
	if code, _ := get("/live"); code != 200 {
		t.Fatalf("/live = %d", code)
	}
	waitReady(t, healthAddr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := check(t, authv3.NewAuthorizationClient(conn), "spiffe://example.org/ns/shop/sa/cart", "spiffe://example.org/ns/shop/sa/frontend", "GET", "/"); got != code.Code_PERMISSION_DENIED {
		t.Fatalf("check = %v, want denied", got)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `sigil_authz_decisions_total{reason="denied",result="deny"} 1`) {
		t.Fatalf("/metrics = %d\n%s", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without pprof: true = %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("authz run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("authz run did not stop")
	}
}

// getHealth GETs path from a health server that may still be starting.
func getHealth(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	for range 1000 {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	t.Fatalf("health address %s never answered", addr)
	return 0, ""
}

// waitReady waits until addr's /ready says 200: a component is not ready
// at once (authz loads its policy after the health server is up).
func waitReady(t *testing.T, addr string) {
	t.Helper()
	var code int
	var body string
	for range 500 {
		if code, body = getHealth(t, addr, "/ready"); code == 200 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/ready = %d %s", addr, code, body)
}

func TestAuthzRunRefusesBadConfigs(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", "", "config is empty"},
		{"two documents", "policy:\n  dir: p\n---\npolicy:\n  dir: q\n", "config holds 2 YAML documents"},
		{"buffer beyond the maximum", "policy:\n  dir: p\ndecision_log:\n  file: d\n  buffer: 9223372036854775807\n", "decision_log.buffer: 9223372036854775807: want 0 to 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "authz.yaml")
			if err := os.WriteFile(cfg, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			root := newRootCmd()
			root.SetArgs([]string{"authz", "run", "--config", cfg})
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), cfg) {
				t.Fatalf("authz run = %v, want an error naming the file and %q", err, tt.want)
			}
		})
	}
}

// TestAuthzCheck sends Checks with `sigil authz check` to sigil dev's
// authz: allowed, denied (exit 1, still printed), and nothing listening.
func TestAuthzCheck(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	svc, err := devAuthz(dir, spiffeid.RequireTrustDomainFromString("example.org"), lis, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	const frontend, cart = "spiffe://example.org/ns/shop/sa/frontend", "spiffe://example.org/ns/shop/sa/cart"
	addr := []string{"--authz-address", lis.Addr().String()}

	out, _, err := run(t, "", append([]string{"authz", "check", "--source", frontend, "--destination", cart, "--path", "/items/7", "-o", "json"}, addr...)...)
	if err != nil || !strings.Contains(out, `"result": "allow"`) || !strings.Contains(out, `"decision_id"`) {
		t.Fatalf("allowed check = %v:\n%s", err, out)
	}
	out, _, err = run(t, "", append([]string{"authz", "check", "--source", cart, "--destination", frontend, "--path", "/items/7"}, addr...)...)
	if err == nil || exitCode(err) != 1 || !strings.Contains(out, "deny") || !strings.Contains(out, "403") {
		t.Fatalf("denied check = %v (exit %d):\n%s", err, exitCode(err), out)
	}
	if _, _, err := run(t, "", "authz", "check", "--source", cart, "--destination", frontend, "--authz-address", freeAddr(t)); exitCode(err) != exitUnavailable ||
		!strings.Contains(err.Error(), "nothing is listening at") || strings.Contains(err.Error(), "rpc error") {
		t.Fatalf("nothing listening: %v", err)
	}
	if _, _, err := run(t, "", append([]string{"authz", "check", "--destination", frontend}, addr...)...); exitCode(err) != exitUsage {
		t.Fatalf("no --source: %v, want a usage error", err)
	}
	// Both decisions are in the log.
	raw, err := os.ReadFile(filepath.Join(dir, "decisions.log"))
	if err != nil || strings.Count(string(raw), "\n") < 2 {
		t.Fatalf("decision log: %v\n%s", err, raw)
	}
}
