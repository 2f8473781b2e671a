package sqlstore_test

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

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	s, err := sqlstore.OpenSQLite(t.Context(), path)
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
			s, err := sqlstore.OpenSQLite(t.Context(), tt.path)
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
	var stores [2]*sqlstore.Store
	for i := range stores {
		s, err := sqlstore.OpenSQLite(t.Context(), path)
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

// Times stay unix microseconds and booleans 0 or 1 in SQLite, as in the files
// that earlier versions wrote.
func TestSQLiteEncoding(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigil.db")
	now := time.Date(2030, 1, 2, 3, 4, 5, 6789, time.UTC)
	s, err := sqlstore.OpenSQLite(t.Context(), path, sqlstore.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateAgent(t.Context(), "ca", store.Agent{ID: "spiffe://example.org/sigil/agent/x/1", AttestationType: "x", Banned: true}); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var timeType, boolType string
	var created, banned int64
	err = db.QueryRowContext(t.Context(), `SELECT typeof(created_at), created_at, typeof(banned), banned FROM agents`).Scan(&timeType, &created, &boolType, &banned)
	if err != nil {
		t.Fatal(err)
	}
	if timeType != "integer" || created != now.UnixMicro() || boolType != "integer" || banned != 1 {
		t.Fatalf("created_at = %s %d, banned = %s %d; want integer %d, integer 1", timeType, created, boolType, banned, now.UnixMicro())
	}
}
