package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlite"
	"github.com/sigilhq/sigil/ca/store/storetest"
)

func open(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sigil.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func BenchmarkStore(b *testing.B) {
	storetest.Benchmark(b, func(b *testing.B) store.Store { return open(b) })
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Write something so that the WAL file exists too.
	if err := s.SaveJournal(t.Context(), "ca-1", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(p), mode)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	created, err := s.CreateEntries(t.Context(), "local-admin", []store.Entry{{
		SPIFFEID: "spiffe://example.org/web", ParentID: "spiffe://example.org/node", Selectors: mustSelectors(t, "unix:uid:1"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.GetEntry(t.Context(), created[0].ID)
	if err != nil {
		t.Fatalf("GetEntry after reopen: %v", err)
	}
	if got.SPIFFEID != "spiffe://example.org/web" || got.Revision != 1 {
		t.Fatalf("GetEntry after reopen = %+v", got)
	}
	if rev, err := s.Revision(t.Context()); err != nil || rev != 1 {
		t.Fatalf("Revision after reopen = %d, %v; want 1", rev, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(context.Background(), `UPDATE schema_version SET version = 1000`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "schema version 1000 is newer") {
		t.Fatalf("Open(newer schema) error = %v, want one saying the schema is newer", err)
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name, path string
	}{
		{"empty path", ""},
		{"missing directory", filepath.Join(t.TempDir(), "no", "such", "dir", "sigil.db")},
		{"not a database", writeFile(t, "garbage.db", strings.Repeat("not sqlite ", 200))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sqlite.Open(t.Context(), tt.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tt.path)
			}
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
