package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCARunHealth runs `sigil ca run` with a health address: /live,
// /ready once the CA has a key, /metrics with the CA's and Go's series,
// and a clean stop.
func TestCARunHealth(t *testing.T) {
	dir := t.TempDir()
	healthAddr := freeAddr(t)
	cfg := filepath.Join(dir, "ca.yaml")
	yaml := "trust_domain: example.org\ndata_dir: " + filepath.Join(dir, "ca") + "\nkey_manager: {type: memory}\nhealth_address: " + healthAddr + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd()
	root.SetArgs([]string{"ca", "run", "--config", cfg})
	root.SetErr(io.Discard)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	if code, _ := getHealth(t, healthAddr, "/live"); code != 200 {
		t.Fatalf("/live = %d", code)
	}
	waitReady(t, healthAddr)
	if code, body := getHealth(t, healthAddr, "/metrics"); code != 200 || !strings.Contains(body, `sigil_ca_active_key_expiry_seconds{kind="x509"}`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics = %d\n%s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ca run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ca run did not stop")
	}
}

// TestCARunKubernetesRefusals: a kubernetes: section the CA cannot act on
// stops `sigil ca run` at start with a reason.
func TestCARunKubernetesRefusals(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct{ name, section, want string }{
		{"not in a cluster", "kubernetes: {cluster: prod}\n", "kubernetes: client config"},
		{"missing kubeconfig", "kubernetes: {cluster: prod, kubeconfig: /nonexistent/kubeconfig}\n", "kubernetes: client config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "ca.yaml")
			yaml := "trust_domain: example.org\ndata_dir: " + filepath.Join(dir, "ca") + "\nkey_manager: {type: memory}\n" + tc.section
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			root := newRootCmd()
			root.SetArgs([]string{"ca", "run", "--config", cfg})
			root.SetErr(io.Discard)
			root.SetOut(io.Discard)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := root.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ca run: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
