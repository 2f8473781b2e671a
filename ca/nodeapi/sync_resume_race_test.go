package nodeapi_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeapi"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// duringSetRead runs a hook once, when a stream starts reading an agent's
// set: after the stream read the changes since the agent's revision,
// before it reads the entries (a write another replica commits then).
type duringSetRead struct {
	nodeapi.Store
	mu     sync.Mutex
	parent string
	hook   func()
}

func (d *duringSetRead) arm(parent string, hook func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.parent, d.hook = parent, hook
}

func (d *duringSetRead) ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error) {
	d.mu.Lock()
	hook := d.hook
	if f.ParentID != d.parent {
		hook = nil
	}
	if hook != nil {
		d.hook = nil
	}
	d.mu.Unlock()
	if hook != nil {
		hook()
	}
	return d.Store.ListEntries(ctx, f)
}

// An agent resumes from its revision while one of its entries is deleted,
// or moved to another agent, between the stream's read of the changes and
// its read of the agent's set: the set no longer holds the entry, the
// changes do not name it, and no later change concerns an entry the stream
// believes the agent lacks. The agent must still be told, or it holds the
// entry for good (a deletion a replica never delivered, seen by hack/fleet
// on two PostgreSQL replicas).
func TestSyncResumeTellsEntryLostDuringSetRead(t *testing.T) {
	postgres := func(t *testing.T, clk *clock.Fake) *sqlstore.Store {
		st, err := sqlstore.OpenPostgres(context.Background(), pgtest.Start(t), sqlstore.WithClock(clk.Now))
		if err != nil {
			t.Fatalf("open postgres store: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	for _, tc := range []struct {
		name  string
		open  func(t *testing.T, clk *clock.Fake) *sqlstore.Store
		moved bool
	}{
		{"sqlite/deleted", nil, false},
		{"sqlite/moved", nil, true},
		{"postgres/deleted", postgres, false},
		{"postgres/moved", postgres, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hooked *duringSetRead
			wrap := func(c *nodeapi.Config) {
				hooked = &duringSetRead{Store: c.Store}
				c.Store = hooked
			}
			var e *env
			if tc.open == nil {
				e = newEnv(t, wrap)
			} else {
				clk := clock.NewFake(time.Now())
				e = newEnvOn(t, tc.open(t, clk), clk, wrap)
			}
			a, b := e.joinAgent(t), e.joinAgent(t)
			kept := e.entry(t, "spiffe://example.org/kept", a.id)
			gone := e.entry(t, "spiffe://example.org/gone", a.id)
			s := e.openSync(t, a, 0)
			first := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
			if !slices.Equal(entryIDs(first), sortedIDs(kept.ID, gone.ID)) {
				t.Fatalf("first response holds %v, want %s and %s", entryIDs(first), kept.ID, gone.ID)
			}

			// The agent reconnects (a renewed SVID) from that revision.
			hooked.arm(a.id, func() {
				var err error
				if tc.moved {
					moved := gone
					moved.ParentID = b.id
					_, err = e.store.UpdateEntry(e.ctx, "test", moved)
				} else {
					_, err = e.store.DeleteEntry(e.ctx, "test", gone.ID)
				}
				if err != nil {
					t.Errorf("change during the set read: %v", err)
				}
			})
			r := e.openSync(t, a, first.GetRevision())
			r.waitFor(t, "the deletion of "+gone.ID, func(resp *nodev1.SyncResponse) bool {
				return slices.Contains(resp.GetDeletedEntryIds(), gone.ID) || (resp.GetFull() && !slices.Contains(entryIDs(resp), gone.ID))
			})
		})
	}
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}
