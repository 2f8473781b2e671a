package ca_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
)

// startFromDir starts a CA the way `sigil ca run` lays out its data dir:
// dir/sigil.db, dir/keys, dir/root.crt. The store is closed when the test
// ends or when stop is called.
func startFromDir(t *testing.T, dir string) (c *ca.CA, stop func(), err error) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	stop = func() { st.Close() }
	t.Cleanup(stop)
	km, err := keys.NewDisk(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: filepath.Join(dir, "root.crt")})
	if err != nil {
		t.Fatal(err)
	}
	if c, err = ca.New(ca.Config{TrustDomain: td, Store: st, Keys: km, Upstream: up}); err != nil {
		t.Fatal(err)
	}
	return c, stop, c.Init(ctx)
}

// mustStart starts a CA from dir, stops it, and returns its active X.509
// key ID.
func mustStart(t *testing.T, dir string) string {
	t.Helper()
	c, stop, err := startFromDir(t, dir)
	if err != nil {
		t.Fatalf("start ca in %s: %v", dir, err)
	}
	defer stop()
	ids := keyIDs(t, c, ca.X509, ca.Active)
	if len(ids) != 1 {
		t.Fatalf("active x509 keys %v, want one", ids)
	}
	return ids[0]
}

// wantMismatch fails unless err is ErrStateMismatch saying every one of parts.
func wantMismatch(t *testing.T, err error, parts ...string) {
	t.Helper()
	if !errors.Is(err, ca.ErrStateMismatch) {
		t.Fatalf("error %v, want ca.ErrStateMismatch", err)
	}
	for _, p := range append(parts, "restore this CA's database") {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
}

func readKeys(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "keys", "*.key"))
	if err != nil || len(files) == 0 {
		t.Fatalf("key files in %s: %v, %v", dir, files, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func TestFirstStartThenRestartKeepsTheKeys(t *testing.T) {
	dir := t.TempDir()
	first := mustStart(t, dir)
	if again := mustStart(t, dir); again != first {
		t.Fatalf("active key %s after restart, want %s", again, first)
	}
}

// A zero-length sigil.db beside keys that have signed must not start a new
// CA over them.
func TestTruncatedDatabaseIsRefused(t *testing.T) {
	dir := t.TempDir()
	mustStart(t, dir)
	before := readKeys(t, dir)
	if err := os.Truncate(filepath.Join(dir, "sigil.db"), 0); err != nil {
		t.Fatal(err)
	}
	_, _, err := startFromDir(t, dir)
	wantMismatch(t, err, "no CA journal", `"x509-1"`, "empty, new or another CA's")
	// Nothing was overwritten: restoring the database still works.
	after := readKeys(t, dir)
	if len(after) != len(before) {
		t.Fatalf("key files %d → %d", len(before), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Fatalf("key file %s changed by the refused start", name)
		}
	}
}

// Two CAs' databases swapped between their data dirs: each refuses the
// other's.
func TestForeignDatabaseIsRefused(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	mustStart(t, a)
	mustStart(t, b)
	dbA, dbB := filepath.Join(a, "sigil.db"), filepath.Join(b, "sigil.db")
	tmp := filepath.Join(t.TempDir(), "swap.db")
	for _, mv := range [][2]string{{dbA, tmp}, {dbB, dbA}, {tmp, dbB}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{a, b} {
		_, _, err := startFromDir(t, dir)
		wantMismatch(t, err, "was issued under a root", "the database is another CA's")
	}
}

// A journal that names keys the key manager does not hold, or holds other
// keys under those names, is refused too.
func TestJournalKeysMustBeInTheKeyManager(t *testing.T) {
	e := newEnv(t)
	other := newEnv(t) // another CA: keys under the same names, other material
	ctx := context.Background()
	empty, err := keys.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		keys  ca.KeyManager
		parts []string
	}{
		{"empty key manager", empty, []string{`names key "x509-1"`, "does not hold"}},
		{"another CA's keys", other.keys, []string{`key "x509-1" in the key manager is not the key of its certificate`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ca.New(ca.Config{TrustDomain: td, Store: e.store, Keys: tt.keys, Upstream: e.up, Now: e.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			wantMismatch(t, c.Init(ctx), tt.parts...)
		})
	}
}
