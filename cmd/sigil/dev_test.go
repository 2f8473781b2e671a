package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/selector"
)

type fixedID spiffeid.ID

func (f fixedID) ID() (spiffeid.ID, bool) { return spiffeid.ID(f), true }

// When the dev agent comes back under a new ID (its identity expired while
// dev was stopped), the previous agent's entries move to it.
func TestAdoptDevAgentMovesEntries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := spiffeid.RequireFromString("spiffe://example.org/sigil/agent/join_token/old")
	next := spiffeid.RequireFromString("spiffe://example.org/sigil/agent/join_token/new")
	other := "spiffe://example.org/sigil/agent/join_token/someone-else"
	mk := func(id, parent string) store.Entry {
		return store.Entry{SPIFFEID: id, ParentID: parent, Selectors: []selector.Selector{{Type: "unix", Value: "uid:1"}}}
	}
	if _, err := st.CreateEntries(ctx, "test", []store.Entry{mk("spiffe://example.org/a", old.String()), mk("spiffe://example.org/b", other)}); err != nil {
		t.Fatal(err)
	}
	if got, err := adoptDevAgent(ctx, st, dir, fixedID(old)); err != nil || got != old {
		t.Fatalf("first run: %v %v", got, err)
	}
	if id, ok := devParentID(filepath.Join(dir, "admin.sock")); !ok || id != old.String() {
		t.Fatalf("devParentID = %q %v", id, ok)
	}
	if _, err := adoptDevAgent(ctx, st, dir, fixedID(next)); err != nil {
		t.Fatal(err)
	}
	moved, _ := st.ListEntries(ctx, store.EntryFilter{ParentID: next.String()})
	if len(moved) != 1 || moved[0].SPIFFEID != "spiffe://example.org/a" {
		t.Fatalf("entries of the new agent: %+v", moved)
	}
	if kept, _ := st.ListEntries(ctx, store.EntryFilter{ParentID: other}); len(kept) != 1 {
		t.Fatalf("another agent's entry was moved: %+v", kept)
	}
	b, _ := os.ReadFile(filepath.Join(dir, devAgentIDFile))
	if strings.TrimSpace(string(b)) != next.String() {
		t.Fatalf("agent-id file = %q", b)
	}
}
