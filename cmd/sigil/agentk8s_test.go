package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/agentconfig"
	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/attest/unix"
)

// The k8s workload attestor's wiring refuses, with what to do, an agent
// that cannot know its node or reach the API server.
func TestWorkloadAttestorWiring(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)

	att, run, err := workloadAttestor(agentconfig.Config{}, log, nil)
	if _, ok := att.(*unix.Attestor); err != nil || !ok || run != nil {
		t.Fatalf("without k8s: %T, run %v, %v; want the unix attestor alone", att, run != nil, err)
	}

	t.Setenv("NODE_NAME", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for _, tt := range []struct {
		name string
		k    agentconfig.K8s
		want string
	}{
		{"no node name", agentconfig.K8s{Kubeconfig: kubeconfig}, "neither is NODE_NAME"},
		{"missing kubeconfig", agentconfig.K8s{Kubeconfig: filepath.Join(dir, "missing"), NodeName: "n"}, "workload_attestors.k8s.kubeconfig"},
		{"not in a cluster", agentconfig.K8s{NodeName: "n"}, "no in-cluster service account"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.k
			if _, _, err := workloadAttestor(agentconfig.Config{K8s: &k}, log, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("workloadAttestor = %v, want an error containing %q", err, tt.want)
			}
		})
	}

	t.Setenv("NODE_NAME", "node-a")
	att, run, err = workloadAttestor(agentconfig.Config{K8s: &agentconfig.K8s{Kubeconfig: kubeconfig}}, log, nil)
	if err != nil || run == nil {
		t.Fatalf("with NODE_NAME and a kubeconfig: run %v, %v", run != nil, err)
	}
	if ch, ok := att.(attest.Chain); !ok || len(ch) != 2 {
		t.Fatalf("attestor %T, want a chain of unix and k8s", att)
	}
}
