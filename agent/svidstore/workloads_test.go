package svidstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/agent/cache"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/testca"
)

func sampleSnapshot(t *testing.T) (cache.Snapshot, spiffeid.TrustDomain) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	svid := ca.Issue(t, "spiffe://example.org/web")
	return cache.Snapshot{
		Entries: []*typesv1.Entry{{Id: "e1", SpiffeId: "spiffe://example.org/web", ParentId: "spiffe://example.org/sigil/agent/x", Selectors: []string{"unix:uid:1000"}}},
		Bundles: []*spiffebundle.Bundle{spiffebundle.FromX509Authorities(td, ca.Roots())},
		SVIDs:   map[string]*x509svid.SVID{"e1": svid},
	}, td
}

func TestWorkloadsRoundTrip(t *testing.T) {
	in, td := sampleSnapshot(t)
	dir := filepath.Join(t.TempDir(), "svids")
	if _, err := LoadWorkloads(dir, td); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before save: %v", err)
	}
	if err := SaveWorkloads(dir, in); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, WorkloadsFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v, want mode 0600", st, err)
	}
	out, err := LoadWorkloads(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Entries) != 1 || out.Entries[0].GetSpiffeId() != "spiffe://example.org/web" || len(out.Bundles) != 1 ||
		!out.Bundles[0].X509Authorities()[0].Equal(in.Bundles[0].X509Authorities()[0]) || !out.SVIDs["e1"].Certificates[0].Equal(in.SVIDs["e1"].Certificates[0]) {
		t.Fatalf("round trip lost data: %+v", out)
	}
	if err := RemoveWorkloads(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadWorkloads(dir, td); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

// A damaged, truncated, edited or world-readable file is refused with a
// message that says what to do; nothing panics.
func TestWorkloadsRefused(t *testing.T) {
	in, td := sampleSnapshot(t)
	dir := t.TempDir()
	if err := SaveWorkloads(dir, in); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, WorkloadsFileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(good), `"entries":["`, `"entries":["A`, 1)
	if edited == string(good) {
		t.Fatal("could not edit the payload")
	}
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{"truncated", good[:len(good)/2], 0o600, "truncated"},
		{"empty", nil, 0o600, "truncated"},
		{"edited", []byte(edited), 0o600, "checksum mismatch"},
		{"world readable", good, 0o644, "want 0600"},
		{"group readable", good, 0o640, "want 0600"},
		{"version", []byte(`{"version":7}`), 0o600, "unknown version 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadWorkloads(dir, td)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("other trust domain", func(t *testing.T) {
		if err := os.WriteFile(path, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadWorkloads(dir, spiffeid.RequireTrustDomainFromString("other.org")); err == nil || !strings.Contains(err.Error(), "not in trust domain") {
			t.Fatalf("err = %v", err)
		}
	})
}
