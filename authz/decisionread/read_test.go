package decisionread_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread"
	"github.com/sigilhq/sigil/authz/decisionread/decisionreadtest"
)

const n = 3000

func gen(i int) decisionreadtest.Decision {
	result, reason := decisionlog.ResultAllow, "allowed"
	if i%3 == 2 {
		result, reason = decisionlog.ResultDeny, "denied"
	}
	src := fmt.Sprintf("spiffe://example.org/ns/shop/sa/svc%d", i%5)
	return decisionreadtest.Decision{
		Entry: decisionlog.Entry{
			DecisionID: fmt.Sprintf("d-%d", i), Time: time.Unix(1_800_000_000+int64(i), 0).UTC(),
			Source: src, Destination: "spiffe://example.org/ns/shop/sa/cart",
			Method: "GET", Path: "/items/" + strings.Repeat("x", i%40), Result: result, Reason: reason,
		},
		Request: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:  &authv3.AttributeContext_Peer{Principal: src},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/items"}},
		}},
	}
}

func logFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "decisions.log")
	decisionreadtest.WriteLog(t, path, n, gen)
	return path
}

func TestTailPages(t *testing.T) {
	path := logFile(t)
	var seqs []uint64
	var before uint64
	for pages := 0; ; pages++ {
		p, err := decisionread.Tail(path, decisionread.TailOptions{Limit: 700, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			seqs = append(seqs, e.Seq)
		}
		if p.Next == 0 {
			break
		}
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		before = p.Next
	}
	if len(seqs) != n {
		t.Fatalf("pages held %d decisions, want %d", len(seqs), n)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] >= seqs[i-1] {
			t.Fatalf("not newest first at %d: %d after %d", i, seqs[i], seqs[i-1])
		}
	}
}

func TestTailFilter(t *testing.T) {
	path := logFile(t)
	p, err := decisionread.Tail(path, decisionread.TailOptions{Limit: 50, Filter: decisionread.Filter{Source: "svc1", Result: "deny"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 50 {
		t.Fatalf("got %d entries, want 50", len(p.Entries))
	}
	for _, e := range p.Entries {
		if !strings.HasSuffix(e.Source, "svc1") || e.Result != "deny" {
			t.Fatalf("filter let through %s %s", e.Source, e.Result)
		}
	}
	t.Run("scan limit", func(t *testing.T) {
		p, err := decisionread.Tail(path, decisionread.TailOptions{Limit: 10, MaxScan: 100, Filter: decisionread.Filter{Reason: "nothing-has-this"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Entries) != 0 || !p.Exhausted || p.Scanned != 100 || p.Next == 0 {
			t.Fatalf("got %+v, want an exhausted empty page after 100 lines with a next seq", p)
		}
	})
}

func TestLookup(t *testing.T) {
	path := logFile(t)
	all, err := decisionread.Tail(path, decisionread.TailOptions{Limit: n})
	if err != nil {
		t.Fatal(err)
	}
	// Every 37th decision and both ends: each lookup bisects the file.
	for i, want := range all.Entries {
		if i%37 != 0 && i != len(all.Entries)-1 {
			continue
		}
		got, err := decisionread.BySeq(path, want.Seq)
		if err != nil {
			t.Fatalf("seq %d: %v", want.Seq, err)
		}
		if got.DecisionID != want.DecisionID {
			t.Fatalf("seq %d: got %s, want %s", want.Seq, got.DecisionID, want.DecisionID)
		}
	}
	got, err := decisionread.ByID(path, "d-17", 0)
	if err != nil || got.Source != gen(17).Entry.Source {
		t.Fatalf("by id: %+v, %v", got, err)
	}
	if req, err := got.DecodeRequest(); err != nil || req.GetAttributes().GetSource().GetPrincipal() != gen(17).Entry.Source {
		t.Fatalf("logged request: %v, %v", req, err)
	}
	if _, err := decisionread.BySeq(path, 1<<40); !errors.Is(err, decisionread.ErrNotFound) {
		t.Fatalf("missing seq: %v", err)
	}
	if _, err := decisionread.ByID(path, "nope", 0); !errors.Is(err, decisionread.ErrNotFound) {
		t.Fatalf("missing id: %v", err)
	}
}

// A torn last line (a crash mid-write) is skipped, not an error.
func TestTornTail(t *testing.T) {
	path := logFile(t)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"decision_id":"torn","seq":`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p, err := decisionread.Tail(path, decisionread.TailOptions{Limit: 1})
	if err != nil || len(p.Entries) != 1 || p.Entries[0].DecisionID != fmt.Sprintf("d-%d", n-1) {
		t.Fatalf("got %+v, %v", p.Entries, err)
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := decisionread.Tail(filepath.Join(t.TempDir(), "none.log"), decisionread.TailOptions{Limit: 1}); err == nil {
		t.Fatal("no error for a missing log")
	}
}
