package sqlstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/store/storetest"
	"github.com/sigilhq/sigil/internal/pgtest"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// backend is one database the store runs on.
type backend struct {
	name string
	// fresh returns the database/sql driver name and the DSN of a new, empty database.
	fresh func(t testing.TB) (driver, dsn string)
	open  func(ctx context.Context, dsn string, opts ...sqlstore.Option) (*sqlstore.Store, error)
}

func backends() []backend {
	return []backend{
		{
			name:  "sqlite",
			fresh: func(t testing.TB) (string, string) { return "sqlite", filepath.Join(t.TempDir(), "sigil.db") },
			open:  sqlstore.OpenSQLite,
		},
		{
			name:  "postgres",
			fresh: func(t testing.TB) (string, string) { return "pgx", pgtest.Start(t) },
			open:  sqlstore.OpenPostgres,
		},
	}
}

// openFresh opens the backend on a new, empty database.
func (b backend) openFresh(t testing.TB, opts ...sqlstore.Option) *sqlstore.Store {
	t.Helper()
	_, dsn := b.fresh(t)
	s, err := b.open(t.Context(), dsn, opts...)
	if err != nil {
		t.Fatalf("open %s store: %v", b.name, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store { return b.openFresh(t) })
		})
	}
}

func BenchmarkStore(bb *testing.B) {
	for _, b := range backends() {
		bb.Run(b.name, func(bb *testing.B) {
			storetest.Benchmark(bb, func(bb *testing.B) store.Store { return b.openFresh(bb) })
		})
	}
}

func TestReopenKeepsData(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			_, dsn := b.fresh(t)
			s, err := b.open(t.Context(), dsn)
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
			s, err = b.open(t.Context(), dsn)
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
		})
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			driver, dsn := b.fresh(t)
			s, err := b.open(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(t.Context(), `UPDATE schema_version SET version = 1000`); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, err = b.open(t.Context(), dsn)
			if err == nil || !strings.Contains(err.Error(), "schema version 1000 is newer") {
				t.Fatalf("open(newer schema) error = %v, want one saying the schema is newer", err)
			}
		})
	}
}

// Several processes (CA replicas, a CA and a CLI) starting at once each
// migrate the same database.
func TestConcurrentMigration(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			driver, dsn := b.fresh(t)
			const replicas = 4
			var wg sync.WaitGroup
			stores := make([]*sqlstore.Store, replicas)
			errs := make([]error, replicas)
			for i := range replicas {
				wg.Go(func() { stores[i], errs[i] = b.open(context.Background(), dsn) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("replica %d: open: %v", i, err)
				}
				defer stores[i].Close()
			}
			// All replicas see one schema and one revision counter.
			if _, err := stores[0].CreateEntries(t.Context(), "local-admin", []store.Entry{{
				SPIFFEID: "spiffe://example.org/web", ParentID: "spiffe://example.org/node", Selectors: mustSelectors(t, "unix:uid:1"),
			}}); err != nil {
				t.Fatal(err)
			}
			for i, s := range stores {
				if rev, err := s.Revision(t.Context()); err != nil || rev != 1 {
					t.Fatalf("replica %d: Revision = %d, %v; want 1", i, rev, err)
				}
			}
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var rows int
			if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM schema_version`).Scan(&rows); err != nil || rows != 1 {
				t.Fatalf("schema_version holds %d rows (%v), want 1", rows, err)
			}
		})
	}
}

func TestWithClock(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 6789, time.UTC)
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := b.openFresh(t, sqlstore.WithClock(func() time.Time { return now }))
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
		})
	}
}

func mustSelectors(t *testing.T, ss ...string) []selector.Selector {
	t.Helper()
	out, err := selector.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
