package sqlstore_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/ca/store"
)

func batchEntries(t *testing.T, prefix string, n int) []store.Entry {
	es := make([]store.Entry, n)
	for i := range es {
		es[i] = store.Entry{SPIFFEID: fmt.Sprintf("spiffe://example.org/%s/%d", prefix, i), ParentID: "spiffe://example.org/p", Selectors: mustSelectors(t, "unix:uid:1")}
	}
	return es
}

// A batch larger than one INSERT is all or nothing, and a bad entry in it
// is named by its position, wherever it is.
func TestCreateEntriesBatchPositions(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			s := b.openFresh(t)
			defer s.Close()
			stored, err := s.CreateEntries(ctx, "t", batchEntries(t, "stored", 1))
			if err != nil {
				t.Fatal(err)
			}
			rev, err := s.Revision(ctx)
			if err != nil {
				t.Fatal(err)
			}
			const n = 2500
			tests := []struct {
				name    string
				at      int
				spoil   func(*store.Entry)
				wantErr error
			}{
				{"duplicate of a stored entry", 2499, func(e *store.Entry) { e.SPIFFEID = stored[0].SPIFFEID }, store.ErrDuplicate},
				{"duplicate within the batch", 1700, func(e *store.Entry) { e.SPIFFEID = "spiffe://example.org/batch/3" }, store.ErrDuplicate},
				{"invalid entry", 1001, func(e *store.Entry) { e.Selectors = nil }, store.ErrInvalid},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					es := batchEntries(t, "batch", n)
					tt.spoil(&es[tt.at])
					_, err := s.CreateEntries(ctx, "t", es)
					var be *store.BatchError
					if !errors.As(err, &be) || be.Index != tt.at || !errors.Is(err, tt.wantErr) {
						t.Fatalf("CreateEntries error = %v, want a BatchError at %d wrapping %v", err, tt.at, tt.wantErr)
					}
					if got, _ := s.Revision(ctx); got != rev {
						t.Fatalf("revision %d after a failed batch, want %d", got, rev)
					}
					if all, _ := s.ListEntries(ctx, store.EntryFilter{}); len(all) != 1 {
						t.Fatalf("%d entries after a failed batch, want 1", len(all))
					}
				})
			}
			out, err := s.CreateEntries(ctx, "t", batchEntries(t, "batch", n))
			if err != nil {
				t.Fatal(err)
			}
			if out[n-1].Revision != rev+n {
				t.Fatalf("last entry at revision %d, want %d", out[n-1].Revision, rev+n)
			}
			all, err := s.ListEntries(ctx, store.EntryFilter{})
			if err != nil || len(all) != n+1 {
				t.Fatalf("%d entries (%v), want %d", len(all), err, n+1)
			}
			audit, err := s.ListAudit(ctx, store.AuditFilter{})
			if err != nil || len(audit) != n+1 {
				t.Fatalf("%d audit events (%v), want %d", len(audit), err, n+1)
			}
		})
	}
}

// UpdateEntries and DeleteEntries over more rows than one statement
// writes: every entry changed, none lost, and a bad entry anywhere in the
// batch leaves the store as it was.
func TestUpdateDeleteEntriesAcrossStatements(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			s := b.openFresh(t)
			defer s.Close()
			const n = 2500
			created, err := s.CreateEntries(ctx, "t", batchEntries(t, "batch", n))
			if err != nil {
				t.Fatal(err)
			}
			wantState := func(what string, rev int64, audits int, path string) {
				t.Helper()
				if got, _ := s.Revision(ctx); got != rev {
					t.Fatalf("%s: revision %d, want %d", what, got, rev)
				}
				all, err := s.ListEntries(ctx, store.EntryFilter{})
				if err != nil {
					t.Fatal(err)
				}
				if path == "" {
					if len(all) != 0 {
						t.Fatalf("%s: %d entries, want none", what, len(all))
					}
				} else {
					if len(all) != n {
						t.Fatalf("%s: %d entries, want %d", what, len(all), n)
					}
					for _, e := range all {
						if !strings.HasPrefix(e.SPIFFEID, "spiffe://example.org/"+path+"/") {
							t.Fatalf("%s: entry %s has spiffe id %s, want one under /%s/", what, e.ID, e.SPIFFEID, path)
						}
					}
				}
				if ev, err := s.ListAudit(ctx, store.AuditFilter{}); err != nil || len(ev) != audits {
					t.Fatalf("%s: %d audit events (%v), want %d", what, len(ev), err, audits)
				}
			}

			upd := make([]store.Entry, n)
			for i, e := range created {
				e.SPIFFEID = fmt.Sprintf("spiffe://example.org/v1/%d", i)
				upd[i] = e
			}
			stale := slices.Clone(upd)
			stale[2400].Revision--
			_, err = s.UpdateEntries(ctx, "t", stale)
			var be *store.BatchError
			if !errors.As(err, &be) || be.Index != 2400 || !errors.Is(err, store.ErrConflict) {
				t.Fatalf("UpdateEntries error = %v, want a BatchError at 2400 wrapping ErrConflict", err)
			}
			wantState("after a failed update", n, n, "batch")

			out, err := s.UpdateEntries(ctx, "t", upd)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range out {
				if e.Revision != int64(n+i+1) || e.SPIFFEID != upd[i].SPIFFEID {
					t.Fatalf("updated entry %d = %+v, want %s at revision %d", i, e, upd[i].SPIFFEID, n+i+1)
				}
			}
			wantState("after the update", 2*n, 2*n, "v1")

			ids := make([]string, n)
			for i, e := range created {
				ids[i] = e.ID
			}
			bad := slices.Clone(ids)
			bad[1700] = "no-such-entry"
			_, err = s.DeleteEntries(ctx, "t", bad)
			if !errors.As(err, &be) || be.Index != 1700 || !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("DeleteEntries error = %v, want a BatchError at 1700 wrapping ErrNotFound", err)
			}
			wantState("after a failed delete", 2*n, 2*n, "v1")

			if _, err := s.DeleteEntries(ctx, "t", ids); err != nil {
				t.Fatal(err)
			}
			wantState("after the delete", 3*n, 3*n, "")
			ch, err := s.EntriesSince(ctx, 2*n)
			if err != nil || len(ch.Deleted) != n || ch.Revision != 3*n {
				t.Fatalf("EntriesSince(%d): %d deleted at revision %d (%v), want %d at %d", 2*n, len(ch.Deleted), ch.Revision, err, n, 3*n)
			}
		})
	}
}

// Batch writes keep the audit trail as single writes do: one event per
// entry, its Details the same JSON text (keys in order), and entry IDs
// that sort in creation order (UUIDv7, appended to the id indexes).
func TestBatchAuditAndIDs(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			s := b.openFresh(t)
			defer s.Close()
			created, err := s.CreateEntries(ctx, "t", batchEntries(t, "a", 1500))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.IsSortedFunc(created, func(x, y store.Entry) int { return strings.Compare(x.ID, y.ID) }) {
				t.Errorf("entry IDs of one batch are not in creation order: %s ... %s", created[0].ID, created[len(created)-1].ID)
			}
			up := slices.Clone(created[:2])
			up[0].X509TTL, up[1].X509TTL = 1, 1
			if _, err := s.UpdateEntries(ctx, "t", up); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteEntries(ctx, "t", []string{created[2].ID}); err != nil {
				t.Fatal(err)
			}
			evs, err := s.ListAudit(ctx, store.AuditFilter{Limit: 2000})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1503 {
				t.Fatalf("%d audit events, want 1503", len(evs))
			}
			check := func(ev store.AuditEvent, action string, e store.Entry, rev int64) {
				t.Helper()
				want := fmt.Sprintf(`{"parent_id":%q,"revision":%d,"spiffe_id":%q}`, e.ParentID, rev, e.SPIFFEID)
				if ev.Action != action || ev.Actor != "t" || ev.Target != e.ID || ev.Details != want || ev.Time.IsZero() {
					t.Errorf("audit event %+v, want %s by t on %s with details %s", ev, action, e.ID, want)
				}
			}
			check(evs[0], "entry.create", created[0], created[0].Revision)
			check(evs[1499], "entry.create", created[1499], created[1499].Revision)
			check(evs[1500], "entry.update", created[0], created[1499].Revision+1)
			check(evs[1502], "entry.delete", created[2], created[1499].Revision+3)
		})
	}
}
