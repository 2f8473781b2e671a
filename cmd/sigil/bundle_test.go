package main

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/testca"
)

func TestBundleCommands(t *testing.T) {
	e := startAdmin(t)
	sock := []string{"--admin-socket", e.socket}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	own := testca.New(t, td)
	if err := e.store.SetBundle(context.Background(), "ca", store.Bundle{
		TrustDomain: "example.org", X509Authorities: [][]byte{own.Roots()[0].Raw}, RefreshHint: 5 * time.Minute, Sequence: 3,
	}); err != nil {
		t.Fatal(err)
	}

	out, _, err := run(t, "", append([]string{"bundle", "show"}, sock...)...)
	if err != nil {
		t.Fatalf("bundle show: %v", err)
	}
	block, rest := pem.Decode([]byte(out))
	if block == nil || block.Type != "CERTIFICATE" || string(block.Bytes) != string(own.Roots()[0].Raw) || strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("bundle show pem printed:\n%s", out)
	}

	out, _, err = run(t, "", append([]string{"bundle", "show", "-o", "spiffe"}, sock...)...)
	if err != nil {
		t.Fatalf("bundle show -o spiffe: %v", err)
	}
	// json is spiffe; --format is the hidden old name of --output.
	for _, alias := range [][]string{{"-o", "json"}, {"--format", "spiffe"}} {
		again, _, err := run(t, "", append(append([]string{"bundle", "show"}, alias...), sock...)...)
		if err != nil || again != out {
			t.Fatalf("bundle show %v printed %q, %v; want what -o spiffe printed", alias, again, err)
		}
	}
	if _, _, err := run(t, "", append([]string{"bundle", "show", "-o", "xml"}, sock...)...); exitCode(err) != exitUsage {
		t.Fatalf("bundle show -o xml: %v, want a usage error", err)
	}
	sb, err := spiffebundle.Parse(td, []byte(out))
	if err != nil {
		t.Fatalf("bundle show printed no SPIFFE bundle: %v\n%s", err, out)
	}
	if seq, ok := sb.SequenceNumber(); !ok || seq != 3 {
		t.Fatalf("spiffe_sequence = %d, %v; want 3", seq, ok)
	}
	if h, ok := sb.RefreshHint(); !ok || h != 5*time.Minute {
		t.Fatalf("spiffe_refresh_hint = %v, %v; want 5m", h, ok)
	}
	if !strings.Contains(out, `"spiffe_sequence"`) || len(sb.X509Authorities()) != 1 {
		t.Fatalf("bundle show spiffe printed:\n%s", out)
	}

	// Federate with partner.org from a PEM file, then show it.
	partner := testca.New(t, spiffeid.RequireTrustDomainFromString("partner.org"))
	file := filepath.Join(t.TempDir(), "partner.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: partner.Roots()[0].Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, "", append([]string{"bundle", "set", "--trust-domain", "partner.org", "--file", file}, sock...)...)
	if err != nil || !strings.Contains(out, "set bundle of partner.org: 1 X.509") {
		t.Fatalf("bundle set: %q, %v", out, err)
	}
	out, _, err = run(t, "", append([]string{"bundle", "show", "--trust-domain", "partner.org"}, sock...)...)
	if block, _ := pem.Decode([]byte(out)); err != nil || block == nil || string(block.Bytes) != string(partner.Roots()[0].Raw) {
		t.Fatalf("bundle show partner: %q, %v", out, err)
	}
	_, _, err = run(t, "", append([]string{"bundle", "set", "--trust-domain", "example.org", "--file", file}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "trust_domain") {
		t.Fatalf("set own bundle error = %v", err)
	}
	out, _, err = run(t, "", append([]string{"bundle", "list"}, sock...)...)
	if err != nil || !strings.Contains(out, "example.org") || !strings.Contains(out, "partner.org") {
		t.Fatalf("bundle list: %q, %v", out, err)
	}
	if _, _, err := run(t, "", append([]string{"bundle", "delete", "--trust-domain", "partner.org"}, sock...)...); err != nil {
		t.Fatalf("bundle delete: %v", err)
	}
	_, _, err = run(t, "", append([]string{"bundle", "show", "--trust-domain", "partner.org"}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("show deleted bundle error = %v", err)
	}
}
