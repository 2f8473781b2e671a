package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestStart(t *testing.T) {
	// Two databases from one server, each empty and separate.
	dsns := []string{pgtest.Start(t), pgtest.Start(t)}
	if dsns[0] == dsns[1] {
		t.Fatalf("Start returned the same database twice: %s", dsns[0])
	}
	for i, dsn := range dsns {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatalf("connect to %s: %v", dsn, err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("database %d holds %d tables, want 0", i, n)
		}
		if _, err := conn.Exec(t.Context(), `CREATE TABLE only_here (x int)`); err != nil {
			t.Fatal(err)
		}
	}
}
