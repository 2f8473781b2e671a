package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/postgres"
	"github.com/sigilhq/sigil/ca/store/storetest"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t testing.TB) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), pgtest.Start(t))
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

// Several CA replicas starting at once each migrate the same database.
func TestConcurrentMigration(t *testing.T) {
	dsn := pgtest.Start(t)
	const replicas = 4
	var wg sync.WaitGroup
	stores := make([]*postgres.Store, replicas)
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Go(func() { stores[i], errs[i] = postgres.Open(context.Background(), dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
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
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM schema_version`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("schema_version holds %d rows (%v), want 1", rows, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	dsn := pgtest.Start(t)
	s, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `UPDATE schema_version SET version = 1000`); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(t.Context(), dsn)
	if err == nil || !strings.Contains(err.Error(), "schema version 1000 is newer") {
		t.Fatalf("Open(newer schema) error = %v, want one saying the schema is newer", err)
	}
}

func TestOpenBadDSN(t *testing.T) {
	_, err := postgres.Open(t.Context(), "postgres://user:hunter2@127.0.0.1:notaport/db")
	if err == nil {
		t.Fatal("Open(bad DSN) succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Open error %q repeats the password", err)
	}
}
