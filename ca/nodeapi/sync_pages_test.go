package nodeapi_test

import (
	"slices"
	"testing"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeapi"
)

const readsMetric = "sigil_node_sync_reads_total"

// collect gathers every response up to the first for which stop holds.
func (s *syncStream) collect(t *testing.T, what string, stop func(*nodev1.SyncResponse) bool) []*nodev1.SyncResponse {
	t.Helper()
	var out []*nodev1.SyncResponse
	s.waitFor(t, what, func(r *nodev1.SyncResponse) bool {
		out = append(out, r)
		return stop(r)
	})
	return out
}

// A bulk write under other agents costs a stream nothing but Run's shared
// summary: no page of entries is read for it, nothing of it is sent, and
// the next change of its own comes alone. Past the summary's bound the
// stream compares its agent's whole set instead, with the same outcome.
func TestSyncBulkUnderOtherAgents(t *testing.T) {
	for _, c := range []struct {
		name     string
		summary  int
		wantFull bool
	}{
		{"within the summary", 0, false},
		{"summary overflows", 100, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(cfg *nodeapi.Config) { cfg.ChangeSummaryItems = c.summary })
			a := e.joinAgent(t)
			held := e.entry(t, "spiffe://example.org/held", a.id)
			s := e.openSync(t, a, 0)
			s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
			pages, full := counter(t, e, readsMetric, "page"), counter(t, e, readsMetric, "full")

			e.manyEntries(t, 2000, "spiffe://example.org/sigil/agent/join_token/someone-else")
			marker := e.entry(t, "spiffe://example.org/marker", a.id)
			rs := s.collect(t, "the marker entry", hasEntry(marker.ID))
			for _, r := range rs {
				if r.GetFull() || len(r.GetDeletedEntryIds()) > 0 || len(r.GetEntries()) > 1 {
					t.Fatalf("a response about the bulk: full=%v, %d entries, %d deleted", r.GetFull(), len(r.GetEntries()), len(r.GetDeletedEntryIds()))
				}
			}
			// The marker alone, unless it came in the whole set.
			if got := counter(t, e, readsMetric, "page") - pages; got > 2 {
				t.Errorf("%v pages of entries read, want at most 2", got)
			}
			if got := counter(t, e, readsMetric, "full") - full; (got > 0) != c.wantFull {
				t.Errorf("%v whole sets read, want some: %v", got, c.wantFull)
			}

			// The agent's own entry leaving still reaches it.
			if _, err := e.store.DeleteEntry(e.ctx, "test", held.ID); err != nil {
				t.Fatal(err)
			}
			s.waitFor(t, "the deletion", deletes(held.ID))
		})
	}
}

// Many changes under one agent come as several responses of at most
// SyncPageItems entries, at increasing revisions, the last one at the
// store's; an agent resuming from a page's revision gets the rest.
func TestSyncPagesChangesUnderAgent(t *testing.T) {
	const page, n = 100, 350
	e := newEnv(t, func(cfg *nodeapi.Config) { cfg.SyncPageItems = page })
	a := e.joinAgent(t)
	s := e.openSync(t, a, 0)
	start := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true }).GetRevision()

	e.manyEntries(t, n, a.id)
	top, err := e.store.Revision(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs := s.collect(t, "the last page", func(r *nodev1.SyncResponse) bool { return r.GetRevision() == top })
	seen := map[string]bool{}
	prev := start
	var withEntries []*nodev1.SyncResponse
	for _, r := range rs {
		if r.GetFull() || r.GetRevision() < prev {
			t.Fatalf("response full=%v at revision %d after %d", r.GetFull(), r.GetRevision(), prev)
		}
		prev = r.GetRevision()
		if len(r.GetEntries()) > page {
			t.Fatalf("a response with %d entries, want at most %d", len(r.GetEntries()), page)
		}
		for _, en := range r.GetEntries() {
			if en.GetRevision() > r.GetRevision() {
				t.Fatalf("entry at revision %d in a response at %d", en.GetRevision(), r.GetRevision())
			}
			seen[en.GetId()] = true
		}
		if len(r.GetEntries()) > 0 {
			withEntries = append(withEntries, r)
		}
	}
	if len(seen) != n || len(withEntries) < n/page {
		t.Fatalf("%d entries in %d responses, want %d in at least %d", len(seen), len(withEntries), n, n/page)
	}

	// Resume from the first page's revision: exactly the entries after it.
	mid := withEntries[0].GetRevision()
	r := e.openSync(t, a, mid).waitFor(t, "the resumed response", func(*nodev1.SyncResponse) bool { return true })
	var want []string
	for _, w := range withEntries[1:] {
		want = append(want, entryIDs(w)...)
	}
	slices.Sort(want)
	if r.GetFull() || !slices.Equal(entryIDs(r), want) || r.GetRevision() != top {
		t.Fatalf("resumed from %d: full=%v, %d entries at revision %d; want the %d later ones at %d", mid, r.GetFull(), len(entryIDs(r)), r.GetRevision(), len(want), top)
	}
}

// An entry moved to another agent while the summary overflows is still
// reported deleted.
func TestSyncMoveDuringOverflow(t *testing.T) {
	e := newEnv(t, func(cfg *nodeapi.Config) { cfg.ChangeSummaryItems = 5 })
	a, b := e.joinAgent(t), e.joinAgent(t)
	moving := e.entry(t, "spiffe://example.org/moving", a.id)
	s := e.openSync(t, a, 0)
	s.waitFor(t, "the first response", hasEntry(moving.ID))
	e.manyEntries(t, 20, b.id)
	moving.ParentID, moving.Revision = b.id, 0
	if _, err := e.store.UpdateEntry(e.ctx, "test", moving); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "the moved entry reported deleted", deletes(moving.ID))
}
