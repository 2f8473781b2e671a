package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/workloadapi"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
)

// startWorkloadAPI serves the real Workload API server with the real unix
// attestor over src on a fresh socket.
func startWorkloadAPI(t *testing.T) (string, *workloadtest.Source, *testca.CA) {
	t.Helper()
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	src := workloadtest.New(t, ca)
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := workloadapi.New(workloadapi.Config{Source: src, Attestor: att})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(workloadapi.ServerOptions()...)
	srv.Register(g)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(ln) }()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return sock, src, ca
}

func TestSVIDFetchSocketForms(t *testing.T) {
	sock, src, ca := startWorkloadAPI(t)
	uid := fmt.Sprint(os.Getuid())
	src.Put(workloadtest.Entry{ID: "me", Selectors: []selector.Selector{{Type: "unix", Value: "uid:" + uid}}, SVID: ca.Issue(t, "spiffe://example.org/me")})
	t.Setenv("HOME", t.TempDir()) // the dev default points nowhere
	missing := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{name: "plain path flag", args: []string{"--socket", sock}},
		{name: "unix url flag", args: []string{"--socket", "unix://" + sock}},
		{name: "SPIFFE_ENDPOINT_SOCKET", env: map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix://" + sock}},
		{name: "SIGIL_SOCKET wins over SPIFFE_ENDPOINT_SOCKET", env: map[string]string{"SIGIL_SOCKET": sock, "SPIFFE_ENDPOINT_SOCKET": "unix://" + missing}},
		{name: "flag wins over the environment", env: map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix://" + missing}, args: []string{"--socket", "unix://" + sock}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			for _, sub := range [][]string{{"svid", "fetch"}, {"jwt", "fetch", "--audience", "a"}} {
				out, _, err := run(t, "", append(sub, tc.args...)...)
				if err != nil {
					t.Fatalf("%v: %v", sub, err)
				}
				if sub[0] == "svid" && !strings.Contains(out, "spiffe://example.org/me") {
					t.Fatalf("%v printed %q", sub, out)
				}
			}
		})
	}
}

func TestSVIDFetchNoIdentity(t *testing.T) {
	sock, _, _ := startWorkloadAPI(t)
	for _, sub := range [][]string{{"svid", "fetch"}, {"jwt", "fetch", "--audience", "a"}} {
		_, _, err := run(t, "", append(sub, "--socket", sock)...)
		if code := exitCode(err); code != exitDenied {
			t.Fatalf("%v: exit code %d (%v), want %d", sub, code, err, exitDenied)
		}
		for _, want := range []string{"no identity for this process", fmt.Sprintf("uid %d", os.Getuid()), sock, "sigil entry create"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v: %q lacks %q", sub, err, want)
			}
		}
		if strings.Contains(err.Error(), "rpc error") {
			t.Errorf("%v: raw gRPC text: %v", sub, err)
		}
	}
}
