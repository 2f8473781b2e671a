package decisionread_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread"
	"github.com/sigilhq/sigil/authz/decisionread/decisionreadtest"
)

// Whatever a decision log file holds, the readers return entries or
// errors, never panic or loop.
func FuzzReaders(f *testing.F) {
	seed := filepath.Join(f.TempDir(), "seed.log")
	decisionreadtest.WriteLog(f, seed, 3, gen)
	raw, err := os.ReadFile(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw, uint64(2))
	f.Add([]byte("\n\n{\"seq\":1}\n{"), uint64(1))
	f.Add([]byte{}, uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, seq uint64) {
		path := filepath.Join(t.TempDir(), "d.log")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := decisionread.Tail(path, decisionread.TailOptions{Limit: 2, MaxScan: 50})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Entries) > 2 || p.Scanned > 50 {
			t.Fatalf("page of %d after %d lines", len(p.Entries), p.Scanned)
		}
		if e, err := decisionread.BySeq(path, seq); err == nil && e.Seq != seq {
			t.Fatalf("BySeq(%d) returned seq %d", seq, e.Seq)
		}
		_, _ = decisionread.ByID(path, "d-1", 50)
		if _, err := decisionread.Scan(path, 50, func(decisionlog.Entry) bool { return true }); err != nil {
			t.Fatal(err)
		}
	})
}
