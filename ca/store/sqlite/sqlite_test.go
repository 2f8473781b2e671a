package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlite"
	"github.com/sigilhq/sigil/ca/store/storetest"
	"github.com/sigilhq/sigil/internal/selector"
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

// Two stores on one file (a CA and a CLI, say) write at once: immediate
// transactions and the busy timeout queue them instead of failing.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	var stores [2]*sqlite.Store
	for i := range stores {
		s, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	const perWorker = 10
	var wg sync.WaitGroup
	errs := make(chan error, 4*perWorker)
	revs := make(chan int64, 4*perWorker)
	for w := range 4 {
		s := stores[w%2]
		wg.Go(func() {
			for i := range perWorker {
				out, err := s.CreateEntries(context.Background(), "local-admin", []store.Entry{{
					SPIFFEID:  fmt.Sprintf("spiffe://example.org/w%d/%d", w, i),
					ParentID:  "spiffe://example.org/node",
					Selectors: []selector.Selector{{Type: "unix", Value: "uid:1"}},
				}})
				if err != nil {
					errs <- err
					return
				}
				revs <- out[0].Revision
			}
		})
	}
	wg.Wait()
	close(errs)
	close(revs)
	for err := range errs {
		t.Fatalf("CreateEntries: %v", err)
	}
	seen := map[int64]bool{}
	for r := range revs {
		if seen[r] || r < 1 || r > 4*perWorker {
			t.Fatalf("revision %d handed out twice or out of range", r)
		}
		seen[r] = true
	}
	if len(seen) != 4*perWorker {
		t.Fatalf("%d revisions handed out, want %d", len(seen), 4*perWorker)
	}
}

func TestWithClock(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 6789, time.UTC)
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sigil.db"), sqlite.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.CreateAgent(t.Context(), "ca", store.Agent{ID: "spiffe://example.org/sigil/agent/x/1", AttestationType: "x"})
	if err != nil {
		t.Fatal(err)
	}
	want := now.Truncate(time.Microsecond)
	if !a.CreatedAt.Equal(want) || !a.UpdatedAt.Equal(want) {
		t.Fatalf("CreatedAt %v, UpdatedAt %v, want %v", a.CreatedAt, a.UpdatedAt, want)
	}
	evs, err := s.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil || len(evs) != 1 || !evs[0].Time.Equal(want) {
		t.Fatalf("ListAudit = %+v, %v; want one event at %v", evs, err, want)
	}
}
