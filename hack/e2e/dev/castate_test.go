package dev

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caDir is one CA's data dir and config for `sigil ca run`.
type caDir struct{ dir, config, sock string }

func newCADir(t *testing.T, name string) caDir {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	c := caDir{dir: dir, config: filepath.Join(filepath.Dir(dir), name+".yaml"), sock: filepath.Join(dir, "admin.sock")}
	cfg := fmt.Sprintf("trust_domain: example.org\ndata_dir: %s\nserver_address: 127.0.0.1:0\nhealth_address: 127.0.0.1:0\n", dir)
	if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c caDir) db() string { return filepath.Join(c.dir, "sigil.db") }

// run starts `sigil ca run`, waits for its admin socket, runs fn, then
// stops it with Ctrl-C.
func (c caDir) run(t *testing.T, fn func()) {
	t.Helper()
	p := sigil.Start(t, "ca", "run", "--config", c.config)
	// The socket of an earlier run may still be on disk: wait until this
	// process answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.Exited() {
			t.Fatalf("sigil ca run exited:\n%s", p.Output())
		}
		if _, _, err := sigil.Run(t, "ca", "status", "--admin-socket", c.sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sigil ca run never answered on %s:\n%s", c.sock, p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	fn()
	if _, err := p.Interrupt(t, 10*time.Second); err != nil {
		t.Fatalf("sigil ca run did not stop cleanly: %v\n%s", err, p.Output())
	}
}

// refused runs `sigil ca run` and wants it to exit at once naming the
// mismatch, every one of parts and the data dir.
func (c caDir) refused(t *testing.T, parts ...string) {
	t.Helper()
	_, errOut, err := sigil.Run(t, "ca", "run", "--config", c.config)
	if err == nil {
		t.Fatal("sigil ca run started")
	}
	for _, p := range append(parts, "ca state mismatch", "restore this CA's database", "data_dir "+c.dir) {
		if !strings.Contains(errOut, p) {
			t.Fatalf("stderr does not mention %q:\n%s", p, errOut)
		}
	}
}

// copyFile copies a database file over another; SQLite's side files of the
// old one go, as an operator restoring a backup would remove them.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	dropSideFiles(t, to)
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func dropSideFiles(t *testing.T, db string) {
	t.Helper()
	for _, f := range []string{db + "-wal", db + "-shm", db + "-journal"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

// The CA refuses a database that does not belong to its keys: emptied to
// zero bytes, or another CA's. See README.md, steps 9 to 13.
func TestCARunRefusesAnEmptiedOrForeignDatabase(t *testing.T) {
	a, b := newCADir(t, "a"), newCADir(t, "b")
	backup := filepath.Join(t.TempDir(), "a.db")
	entry := func(c caDir) []string {
		return []string{"entry", "create", "--admin-socket", c.sock, "--spiffe-id", "spiffe://example.org/" + filepath.Base(c.dir),
			"--parent-id", "spiffe://example.org/sigil/agent/join_token/x", "--selector", "unix:uid:1000"}
	}
	listed := func(c caDir) {
		out := sigil.MustRun(t, "entry", "list", "--admin-socket", c.sock)
		if !strings.Contains(out, "spiffe://example.org/"+filepath.Base(c.dir)) {
			t.Fatalf("entry list after restart lost the entry:\n%s", out)
		}
	}

	// 9. First start of two CAs, each with an entry.
	a.run(t, func() { sigil.MustRun(t, entry(a)...) })
	b.run(t, func() { sigil.MustRun(t, entry(b)...) })
	// 10. A normal restart keeps the entry; keep a backup of the database.
	a.run(t, func() { listed(a) })
	copyFile(t, a.db(), backup)
	// 11. A zero-length database is refused.
	dropSideFiles(t, a.db())
	if err := os.Truncate(a.db(), 0); err != nil {
		t.Fatal(err)
	}
	a.refused(t, "no CA journal", `"x509-1"`)
	// 12. Another CA's database is refused.
	copyFile(t, b.db(), a.db())
	a.refused(t, "was issued under a root", "another CA's")
	// 13. Restoring the backup, as the message says, brings the CA back.
	copyFile(t, backup, a.db())
	a.run(t, func() { listed(a) })
}
