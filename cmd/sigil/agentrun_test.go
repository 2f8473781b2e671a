package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/caconfig"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// TestAgentRunAndWorkloadCommands runs the real CA wiring (buildCA) and
// `sigil agent run` in process, then `sigil svid fetch`, `sigil jwt fetch`
// and `sigil jwt validate` against the agent's socket.
func TestAgentRunAndWorkloadCommands(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg, err := caconfig.File{TrustDomain: "example.org", DataDir: filepath.Join(dir, "ca"), ServerAddress: addr, KeyManager: caconfig.KeyManagerFile{Type: "memory"}}.Validate()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stack, err := buildCA(ctx, cfg, slog.New(slog.DiscardHandler), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	caDone := make(chan error, 1)
	go func() { caDone <- stack.Run(ctx) }()
	defer func() { cancel(); <-caDone }()

	tok := "0123456789abcdef"
	if err := stack.Store.CreateJoinToken(ctx, "test", store.JoinToken{Token: tok, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	sels, err := selector.ParseAll([]string{fmt.Sprintf("unix:uid:%d", os.Getuid())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stack.Store.CreateEntries(ctx, "test", []store.Entry{{SPIFFEID: "spiffe://example.org/me", ParentID: "spiffe://example.org/sigil/agent/join_token/" + tok, Selectors: sels}}); err != nil {
		t.Fatal(err)
	}
	roots, err := stack.CA.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bundle bytes.Buffer
	for _, r := range roots {
		pem.Encode(&bundle, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), bundle.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	healthAddr := freeAddr(t)
	yaml := fmt.Sprintf("trust_domain: example.org\nserver_address: %s\ndata_dir: agent\nsocket_path: %s\ntrust_bundle_file: bundle.pem\njoin_token: %s\nhealth_address: %s\n", addr, sock, tok, healthAddr)
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	agentCmd := newRootCmd()
	agentCmd.SetArgs([]string{"agent", "run", "--config", filepath.Join(dir, "agent.yaml")})
	var agentErr bytes.Buffer
	agentCmd.SetOut(&agentErr)
	agentCmd.SetErr(&agentErr)
	actx, acancel := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- agentCmd.ExecuteContext(actx) }()
	defer func() {
		acancel()
		if err := <-agentDone; err != nil {
			t.Errorf("agent run: %v\n%s", err, agentErr.String())
		}
	}()

	var out string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err = run(t, "", "svid", "fetch", "--socket", sock, "--timeout", "2s")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("svid fetch: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out, "spiffe://example.org/me") {
		t.Fatalf("svid fetch printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent", "agent-identity.json")); err != nil {
		t.Fatalf("no persisted identity: %v", err)
	}
	waitReady(t, healthAddr)
	if code, body := getHealth(t, healthAddr, "/metrics"); code != 200 || !strings.Contains(body, "sigil_agent_attestations_total{result=\"ok\"} 1") || !strings.Contains(body, "sigil_workloadapi_calls_total") {
		t.Fatalf("agent /metrics = %d\n%s", code, body)
	}

	write := filepath.Join(dir, "out")
	if _, _, err := run(t, "", "svid", "fetch", "--socket", sock, "--write", write); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(write, "svid.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v %v", st, err)
	}
	chainPEM, _ := os.ReadFile(filepath.Join(write, "svid.pem"))
	rootsPEM, _ := os.ReadFile(filepath.Join(write, "bundle.pem"))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootsPEM) {
		t.Fatal("bundle.pem holds no certificates")
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("written svid.pem does not verify against bundle.pem: %v", err)
	}

	t.Setenv("SIGIL_SOCKET", sock)
	jwt, _, err := run(t, "", "jwt", "fetch", "--audience", "db")
	if err != nil {
		t.Fatalf("jwt fetch: %v", err)
	}
	jwt = strings.TrimSpace(jwt)
	if out, _, err := run(t, "", "jwt", "validate", "--audience", "db", jwt); err != nil || !strings.Contains(out, "valid: spiffe://example.org/me") {
		t.Fatalf("jwt validate: %q %v", out, err)
	}
	if _, _, err := run(t, "", "jwt", "validate", "--audience", "other", jwt); err == nil {
		t.Fatal("validated a token for another audience")
	}
	if _, _, err := run(t, "", "jwt", "fetch"); err == nil || !strings.Contains(err.Error(), "--audience") {
		t.Fatalf("jwt fetch without audience: %v", err)
	}

	// A bootstrap that will not heal (a join token the CA never issued) ends
	// `sigil agent run` with the error although its health server is up
	// (issue 10: it used to hang with /live ok).
	bad := fmt.Sprintf("trust_domain: example.org\nserver_address: %s\ndata_dir: bad\nsocket_path: %s\ntrust_bundle_file: bundle.pem\njoin_token: not-a-token\nhealth_address: %s\n",
		addr, filepath.Join(dir, "bad.sock"), freeAddr(t))
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	badCmd := newRootCmd()
	badCmd.SetArgs([]string{"agent", "run", "--config", filepath.Join(dir, "bad.yaml")})
	badCmd.SetOut(io.Discard)
	badCmd.SetErr(io.Discard)
	bctx, bcancel := context.WithTimeout(ctx, 60*time.Second)
	defer bcancel()
	err = badCmd.ExecuteContext(bctx)
	if bctx.Err() != nil {
		t.Fatal("agent run with a bad join token and a health server kept running")
	}
	if err == nil || !strings.Contains(err.Error(), "join") {
		t.Fatalf("agent run with a bad join token = %v, want an error about the join token", err)
	}
}
