package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/testca"
)

func TestFederationCommands(t *testing.T) {
	e := startAdmin(t)
	sock := []string{"--admin-socket", e.socket}
	peer := testca.New(t, spiffeid.RequireTrustDomainFromString("spire.test"))
	doc, err := spiffebundle.FromX509Authorities(peer.TrustDomain(), peer.Roots()).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "spire.json")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	create := []string{"federation", "create", "--trust-domain", "spire.test", "--bundle-endpoint-url", "https://127.0.0.1:1/",
		"--endpoint-spiffe-id", "spiffe://spire.test/spire/server"}

	// https_spiffe without an initial bundle cannot authenticate the endpoint.
	_, _, err = run(t, "", append(create, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "initial bundle") {
		t.Fatalf("create without a bundle: %v, want a refusal naming the initial bundle", err)
	}
	out, _, err := run(t, "", append(append(create, "--bundle", file), sock...)...)
	if err != nil || !strings.Contains(out, "federating with spire.test") {
		t.Fatalf("create: %q, %v", out, err)
	}
	if _, err := e.store.GetBundle(t.Context(), "spire.test"); err != nil {
		t.Fatalf("the initial bundle was not stored: %v", err)
	}
	if _, _, err := run(t, "", append(append(create, "--bundle", file), sock...)...); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("create again: %v, want already exists", err)
	}
	out, _, err = run(t, "", append([]string{"federation", "list"}, sock...)...)
	if err != nil || !strings.Contains(out, "spire.test") || !strings.Contains(out, "https_spiffe") {
		t.Fatalf("list: %q, %v", out, err)
	}
	out, _, err = run(t, "", append([]string{"federation", "show", "--trust-domain", "spire.test"}, sock...)...)
	if err != nil || !strings.Contains(out, "spiffe://spire.test/spire/server") {
		t.Fatalf("show: %q, %v", out, err)
	}
	for _, bad := range [][]string{
		{"federation", "create", "--trust-domain", "example.org", "--bundle-endpoint-url", "https://h/", "--profile", "https_web"},
		{"federation", "create", "--trust-domain", "x.test", "--bundle-endpoint-url", "http://h/", "--profile", "https_web"},
		{"federation", "create", "--trust-domain", "x.test", "--bundle-endpoint-url", "https://h/", "--profile", "ftp"},
	} {
		if _, _, err := run(t, "", append(bad, sock...)...); err == nil {
			t.Errorf("%v succeeded", bad)
		}
	}
	if _, _, err := run(t, "", append([]string{"federation", "delete", "--trust-domain", "spire.test"}, sock...)...); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := run(t, "", append([]string{"federation", "show", "--trust-domain", "spire.test"}, sock...)...); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("show after delete: %v", err)
	}
}
