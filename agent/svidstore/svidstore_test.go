package svidstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/testca"
)

func TestSaveLoad(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	svid := ca.Issue(t, "spiffe://example.org/sigil/agent/join_token/abc")
	dir := filepath.Join(t.TempDir(), "data")

	if _, err := Load(dir, td); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load before save: err = %v, want ErrNotFound", err)
	}
	in := &Identity{SVID: svid, Bundle: ca.Roots(), JoinTokenSHA256: HashToken("abc")}
	if err := Save(dir, in); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode = %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	out, err := Load(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if out.SVID.ID != svid.ID || !out.SVID.Certificates[0].Equal(svid.Certificates[0]) || len(out.Bundle) != 1 || !out.Bundle[0].Equal(ca.Roots()[0]) {
		t.Errorf("round trip lost data: %+v", out)
	}
	if out.JoinTokenSHA256 != HashToken("abc") || out.NotAfter() != svid.Certificates[0].NotAfter {
		t.Errorf("token hash or expiry lost")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	if _, err := Load(dir, spiffeid.RequireTrustDomainFromString("other.org")); err == nil || !strings.Contains(err.Error(), "not in trust domain") {
		t.Errorf("other trust domain: err = %v", err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, td); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: err = %v", err)
	}
	if err := Remove(dir); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

func TestLoadRejects(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	svid := ca.Issue(t, "spiffe://example.org/sigil/agent/x")
	other := ca.Issue(t, "spiffe://example.org/sigil/agent/y")
	tests := []struct {
		name, content, wantErr string
	}{
		{name: "garbage", content: "{", wantErr: "unexpected end"},
		{name: "version", content: `{"version":2}`, wantErr: "unknown version 2"},
		{name: "no chain", content: `{"version":1}`, wantErr: "agent identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(dir, td); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("key mismatch", func(t *testing.T) {
		dir := t.TempDir()
		mixed := *svid
		mixed.PrivateKey = other.PrivateKey
		if err := Save(dir, &Identity{SVID: &mixed, Bundle: ca.Roots()}); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, td); err == nil || !strings.Contains(err.Error(), "private key") {
			t.Errorf("err = %v, want a key mismatch", err)
		}
	})
	t.Run("incomplete", func(t *testing.T) {
		if err := Save(t.TempDir(), &Identity{}); err == nil {
			t.Error("saved an incomplete identity")
		}
	})
}

func TestRevokedKeys(t *testing.T) {
	dir := t.TempDir()
	if ids, err := LoadRevokedKeys(dir); err != nil || ids != nil {
		t.Fatalf("nothing persisted: %v, %v", ids, err)
	}
	id := strings.Repeat("ab", 32)
	many := make([]string, MaxRevokedKeys+1)
	for i := range many {
		many[i] = fmt.Sprintf("%064x", i)
	}
	if err := SaveRevokedKeys(dir, many); err != nil {
		t.Fatal(err)
	}
	got, err := LoadRevokedKeys(dir)
	if err != nil || len(got) != MaxRevokedKeys || got[0] != many[1] {
		t.Fatalf("over the bound: %d IDs from %v, %v; want the newest %d", len(got), got[:1], err, MaxRevokedKeys)
	}
	for name, doc := range map[string]string{
		"not json":    "{",
		"version":     `{"version":2,"revoked_x509_key_ids":[]}`,
		"not hex":     `{"version":1,"revoked_x509_key_ids":["zz"]}`,
		"short":       `{"version":1,"revoked_x509_key_ids":["abcd"]}`,
		"good, check": `{"version":1,"revoked_x509_key_ids":["` + id + `"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, RevokedKeysFile), []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			ids, err := LoadRevokedKeys(dir)
			if name == "good, check" {
				if err != nil || len(ids) != 1 || ids[0] != id {
					t.Fatalf("%v, %v", ids, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded %v", ids)
			}
		})
	}
}
