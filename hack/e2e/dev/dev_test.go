// Package dev is the end-to-end suite for `sigil dev` and the admin CLI; see README.md.
package dev

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigilhq/sigil/internal/e2e"
)

var sigil *e2e.Binary

func TestMain(m *testing.M) {
	e2e.Main(m, "dev", func(b *e2e.Binary, _ string) error { sigil = b; return nil })
}

func startDev(t *testing.T, dir string) (*e2e.Proc, string) {
	t.Helper()
	authzAddr := e2e.FreeAddr(t)
	p := sigil.Start(t, "dev", "--dir", dir, "--server-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0", "--authz-address", authzAddr)
	e2e.WaitForSocket(t, p, filepath.Join(dir, "admin.sock"), 30*time.Second)
	return p, authzAddr
}

// authzServing asks the authz gRPC health service whether it serves.
func authzServing(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var last error
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("authz at %s is not serving: %v", addr, last)
}

func TestDevLifecycle(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	admin := func(args ...string) []string { return append(args, "--admin-socket", sock) }

	// 1. Start.
	started := time.Now()
	dev, authzAddr := startDev(t, dir)
	t.Logf("sigil dev ready in %s", time.Since(started))
	authzServing(t, authzAddr)
	if _, err := os.Stat(filepath.Join(dir, "policies")); err != nil {
		t.Fatalf("dev did not seed its policy directory: %v", err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode: %v %v, want 0600", fi.Mode().Perm(), err)
	}

	// 2. A second dev on the same directory is refused clearly.
	if _, errOut, err := sigil.Run(t, "dev", "--dir", dir, "--server-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0", "--authz-address", "127.0.0.1:0"); err == nil || !strings.Contains(errOut, "already running") {
		t.Fatalf("second sigil dev: err=%v stderr=%q, want an 'already running' refusal", err, errOut)
	}

	// 3. The bundle.
	pemOut := sigil.MustRun(t, admin("bundle", "show", "--format", "pem")...)
	root := parseRoot(t, pemOut)
	spiffeOut := sigil.MustRun(t, admin("bundle", "show", "--format", "spiffe")...)
	var doc map[string]any
	if err := json.Unmarshal([]byte(spiffeOut), &doc); err != nil {
		t.Fatalf("spiffe bundle is not JSON: %v\n%s", err, spiffeOut)
	}
	if _, ok := doc["spiffe_sequence"]; !ok {
		t.Fatalf("spiffe bundle lacks spiffe_sequence: %s", spiffeOut)
	}
	if _, ok := doc["spiffe_refresh_hint"]; !ok {
		t.Fatalf("spiffe bundle lacks spiffe_refresh_hint: %s", spiffeOut)
	}

	// 4. Entries: create, list; bad input refused, nothing written.
	const id = "spiffe://example.org/ns/shop/sa/cart"
	create := admin("entry", "create", "--spiffe-id", id, "--parent-id", "spiffe://example.org/sigil/agent/dev", "--selector", "unix:uid:1000")
	sigil.MustRun(t, create...)
	if out := sigil.MustRun(t, admin("entry", "list")...); !strings.Contains(out, id) {
		t.Fatalf("entry list does not show %s:\n%s", id, out)
	}
	if _, errOut, err := sigil.Run(t, create...); err == nil || !strings.Contains(strings.ToLower(errOut), "already exists") {
		t.Fatalf("duplicate entry: err=%v stderr=%q", err, errOut)
	}
	if _, errOut, err := sigil.Run(t, admin("entry", "create", "--spiffe-id", "spiffe://example.org/bad path", "--parent-id", "spiffe://example.org/sigil/agent/dev", "--selector", "unix:uid:1")...); err == nil || !strings.Contains(errOut, "spiffe") {
		t.Fatalf("malformed SPIFFE ID: err=%v stderr=%q", err, errOut)
	}
	if out := sigil.MustRun(t, admin("entry", "list")...); strings.Count(out, "spiffe://example.org/ns/") != 1 {
		t.Fatalf("refused entries were written:\n%s", out)
	}

	// 4b. In dev, an entry without --parent-id goes to the dev agent, and
	// the workload (this test's uid) gets its SVID from the agent socket.
	const me = "spiffe://example.org/me"
	sigil.MustRun(t, admin("entry", "create", "--spiffe-id", me, "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))...)
	svidFetch(t, dir, me)

	// 5. Token and CA status.
	if tok := strings.TrimSpace(sigil.MustRun(t, admin("token", "create")...)); len(tok) < 32 {
		t.Fatalf("token create printed %q", tok)
	}
	if out := sigil.MustRun(t, admin("ca", "status")...); !strings.Contains(out, "active") {
		t.Fatalf("ca status shows no active key:\n%s", out)
	}

	// 6. Ctrl-C stops it.
	took, err := dev.Interrupt(t, 10*time.Second)
	if err != nil {
		t.Fatalf("sigil dev exited with %v after SIGINT\n%s", err, dev.Output())
	}
	t.Logf("sigil dev stopped %s after SIGINT", took)

	// 7. Again: same root, same entry.
	startDev(t, dir)
	again := parseRoot(t, sigil.MustRun(t, admin("bundle", "show", "--format", "pem")...))
	if !again.Equal(root) {
		t.Fatal("the root changed across a restart")
	}
	if out := sigil.MustRun(t, admin("entry", "list")...); !strings.Contains(out, id) {
		t.Fatalf("entry lost across a restart:\n%s", out)
	}
	svidFetch(t, dir, me)
}

// svidFetch waits until `sigil svid fetch` on the dev agent socket prints id.
func svidFetch(t *testing.T, dir, id string) {
	t.Helper()
	var out, errOut string
	for range 100 {
		var err error
		out, errOut, err = sigil.Run(t, "svid", "fetch", "--socket", filepath.Join(dir, "agent.sock"))
		if err == nil && strings.Contains(out, id) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sigil svid fetch never printed %s:\nstdout: %s\nstderr: %s", id, out, errOut)
}

func TestCARunRefusesUnknownConfigKey(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ca.yaml")
	if err := os.WriteFile(cfg, []byte("trust_domain: example.org\ndata_dir: "+t.TempDir()+"\nca_tll: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := sigil.Run(t, "ca", "run", "--config", cfg)
	if err == nil || !strings.Contains(errOut, `line 3: unknown key "ca_tll"`) {
		t.Fatalf("err=%v stderr=%q, want the unknown key named with its line", err, errOut)
	}
}

func parseRoot(t *testing.T, out string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(out))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("bundle show --format pem printed no certificate:\n%s", out)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA {
		t.Fatal("bundle root is not a CA")
	}
	return cert
}
