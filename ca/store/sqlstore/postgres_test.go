package sqlstore_test

import (
	"strings"
	"testing"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestOpenBadDSN(t *testing.T) {
	_, err := sqlstore.OpenPostgres(t.Context(), "postgres://user:hunter2@127.0.0.1:notaport/db")
	if err == nil {
		t.Fatal("Open(bad DSN) succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Open error %q repeats the password", err)
	}
}

// pgxpool's pool_* settings in the DSN size the pool, as they always did.
func TestOpenPoolSettings(t *testing.T) {
	s, err := sqlstore.OpenPostgres(t.Context(), pgtest.Start(t)+"&pool_max_conns=2&pool_max_conn_idle_time=1m")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateEntries(t.Context(), "local-admin", []store.Entry{{
		SPIFFEID: "spiffe://example.org/web", ParentID: "spiffe://example.org/node", Selectors: mustSelectors(t, "unix:uid:1"),
	}}); err != nil {
		t.Fatal(err)
	}
}
