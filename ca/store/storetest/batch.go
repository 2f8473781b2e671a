package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/store"
)

// wantBatchErr checks that err is a *store.BatchError at index wrapping target.
func wantBatchErr(t *testing.T, what string, err error, index int, target error) {
	t.Helper()
	var be *store.BatchError
	if !errors.As(err, &be) || be.Index != index || !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want a BatchError at %d wrapping %q", what, err, index, target)
	}
}

// wantUnchanged checks that the store still holds exactly want (by ID),
// at revision rev, with audits audit events.
func wantUnchanged(t *testing.T, s store.Store, what string, want []store.Entry, rev int64, audits int) {
	t.Helper()
	wantRevision(t, s, rev)
	for _, e := range want {
		got, err := s.GetEntry(t.Context(), e.ID)
		if err != nil {
			t.Fatalf("%s: GetEntry(%s): %v", what, e.ID, err)
		}
		wantEntry(t, what, got, e)
	}
	if evs := audit(t, s); len(evs) != audits {
		t.Fatalf("%s: audit trail holds %d events, want %d", what, len(evs), audits)
	}
}

func testUpdateEntries(t *testing.T, s store.Store) {
	created := mustCreate(t, s,
		entry(t, "a", "node-1", "unix:uid:1"),
		entry(t, "b", "node-1", "unix:uid:2"),
		entry(t, "c", "node-1", "unix:uid:3"),
		entry(t, "d", "node-1", "unix:uid:4"),
	) // revisions 1..4
	a, b, c, d := created[0], created[1], created[2], created[3]

	ua, ub := a, b
	ua.SPIFFEID = "spiffe://example.org/a-renamed"
	ua.X509TTL = time.Hour
	ua.DNSNames = []string{"a.example"}
	ua.Admin = true
	ua.CreatedAt = epoch // ignored
	ub.Selectors = sels(t, "unix:uid:5", "unix:gid:5")
	ub.Revision = 0 // no check
	ub.Downstream = true
	got, err := s.UpdateEntries(t.Context(), admin, []store.Entry{ua, ub})
	if err != nil {
		t.Fatalf("UpdateEntries: %v", err)
	}
	wa, wb := ua, ub
	wa.Revision, wa.CreatedAt = 5, a.CreatedAt
	wb.Revision, wb.CreatedAt = 6, b.CreatedAt
	wb.Selectors = sels(t, "unix:gid:5", "unix:uid:5")
	if len(got) != 2 {
		t.Fatalf("UpdateEntries returned %d entries, want 2", len(got))
	}
	wantEntry(t, "UpdateEntries[0]", got[0], wa)
	wantEntry(t, "UpdateEntries[1]", got[1], wb)
	wantUnchanged(t, s, "after UpdateEntries", []store.Entry{wa, wb, c, d}, 6, 6)
	for _, ev := range audit(t, s)[4:] {
		if ev.Action != "entry.update" {
			t.Fatalf("audit event %+v, want entry.update", ev)
		}
	}
	ch, err := s.EntriesSince(t.Context(), 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Updated) != 2 || ch.Updated[0].ID != a.ID || ch.Updated[1].ID != b.ID || ch.Revision != 6 {
		t.Fatalf("EntriesSince(4) = %+v, want a then b at revision 6", ch)
	}

	// Each failure leaves everything as it was.
	tests := []struct {
		name    string
		actor   string
		batch   func() []store.Entry
		index   int // -1: not a BatchError
		wantErr error
	}{
		{"unknown id", admin, func() []store.Entry {
			x := c
			x.ID = "no-such-entry"
			return []store.Entry{d, x}
		}, 1, store.ErrNotFound},
		{"stale revision", admin, func() []store.Entry {
			x := wa
			x.Revision = a.Revision
			return []store.Entry{d, x}
		}, 1, store.ErrConflict},
		{"duplicate of an entry outside the batch", admin, func() []store.Entry {
			x := d
			x.SPIFFEID, x.Selectors = c.SPIFFEID, c.Selectors
			return []store.Entry{x}
		}, 0, store.ErrDuplicate},
		{"duplicate within the batch", admin, func() []store.Entry {
			x, y := c, d
			x.SPIFFEID = "spiffe://example.org/same"
			y.SPIFFEID, y.Selectors = x.SPIFFEID, x.Selectors
			return []store.Entry{x, y}
		}, 1, store.ErrDuplicate},
		{"same id twice", admin, func() []store.Entry { return []store.Entry{c, d, c} }, 2, store.ErrInvalid},
		{"empty id", admin, func() []store.Entry {
			x := d
			x.ID = ""
			return []store.Entry{c, x}
		}, 1, store.ErrInvalid},
		{"no selectors", admin, func() []store.Entry {
			x := d
			x.Selectors = nil
			return []store.Entry{c, x}
		}, 1, store.ErrInvalid},
		{"no actor", "", func() []store.Entry { return []store.Entry{c} }, -1, store.ErrInvalid},
		{"too many", admin, func() []store.Entry { return make([]store.Entry, store.MaxEntryBatch+1) }, -1, store.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.UpdateEntries(t.Context(), tt.actor, tt.batch())
			if tt.index >= 0 {
				wantBatchErr(t, "UpdateEntries", err, tt.index, tt.wantErr)
			} else {
				wantErr(t, "UpdateEntries", err, tt.wantErr)
			}
			wantUnchanged(t, s, "after a failed UpdateEntries", []store.Entry{wa, wb, c, d}, 6, 6)
		})
	}

	// Two entries of one batch may trade places.
	xc, xd := c, d
	xc.SPIFFEID, xc.Selectors = d.SPIFFEID, d.Selectors
	xd.SPIFFEID, xd.Selectors = c.SPIFFEID, c.Selectors
	got, err = s.UpdateEntries(t.Context(), admin, []store.Entry{xc, xd})
	if err != nil {
		t.Fatalf("UpdateEntries(swap): %v", err)
	}
	xc.Revision, xd.Revision = 7, 8
	wantUnchanged(t, s, "after a swap", []store.Entry{wa, wb, xc, xd}, 8, 8)
	if got[0].Revision != 7 || got[1].Revision != 8 {
		t.Fatalf("UpdateEntries(swap) revisions %d, %d; want 7, 8", got[0].Revision, got[1].Revision)
	}

	out, err := s.UpdateEntries(t.Context(), admin, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("UpdateEntries(nil) = %v, %v; want nothing, no error", out, err)
	}
	wantRevision(t, s, 8)
}

func testDeleteEntries(t *testing.T, s store.Store) {
	created := mustCreate(t, s,
		entry(t, "a", "node-1", "unix:uid:1"),
		entry(t, "b", "node-1", "unix:uid:2"),
		entry(t, "c", "node-1", "unix:uid:3"),
	) // revisions 1..3
	a, b, c := created[0], created[1], created[2]

	tests := []struct {
		name    string
		actor   string
		ids     []string
		index   int // -1: not a BatchError
		wantErr error
	}{
		{"unknown id", admin, []string{a.ID, "no-such-entry"}, 1, store.ErrNotFound},
		{"same id twice", admin, []string{a.ID, b.ID, a.ID}, 2, store.ErrInvalid},
		{"empty id", admin, []string{a.ID, ""}, 1, store.ErrInvalid},
		{"no actor", "", []string{a.ID}, -1, store.ErrInvalid},
		{"too many", admin, make([]string, store.MaxEntryBatch+1), -1, store.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.DeleteEntries(t.Context(), tt.actor, tt.ids)
			if tt.index >= 0 {
				wantBatchErr(t, "DeleteEntries", err, tt.index, tt.wantErr)
			} else {
				wantErr(t, "DeleteEntries", err, tt.wantErr)
			}
			wantUnchanged(t, s, "after a failed DeleteEntries", created, 3, 3)
		})
	}

	got, err := s.DeleteEntries(t.Context(), admin, []string{b.ID, a.ID})
	if err != nil {
		t.Fatalf("DeleteEntries: %v", err)
	}
	wb, wa := b, a
	wb.Revision, wa.Revision = 4, 5 // the revisions of the deletions
	if len(got) != 2 {
		t.Fatalf("DeleteEntries returned %d entries, want 2", len(got))
	}
	wantEntry(t, "DeleteEntries[0]", got[0], wb)
	wantEntry(t, "DeleteEntries[1]", got[1], wa)
	for _, e := range []store.Entry{a, b} {
		_, err := s.GetEntry(t.Context(), e.ID)
		wantErr(t, "GetEntry(deleted)", err, store.ErrNotFound)
	}
	wantUnchanged(t, s, "after DeleteEntries", []store.Entry{c}, 5, 5)
	for _, ev := range audit(t, s)[3:] {
		if ev.Action != "entry.delete" {
			t.Fatalf("audit event %+v, want entry.delete", ev)
		}
	}
	ch, err := s.EntriesSince(t.Context(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Updated) != 0 || len(ch.Deleted) != 2 || ch.Deleted[0] != b.ID || ch.Deleted[1] != a.ID || ch.Revision != 5 {
		t.Fatalf("EntriesSince(3) = %+v, want b then a deleted at revision 5", ch)
	}
	// The same entries can be created again once deleted.
	mustCreate(t, s, entry(t, "a", "node-1", "unix:uid:1"), entry(t, "b", "node-1", "unix:uid:2"))

	out, err := s.DeleteEntries(t.Context(), admin, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("DeleteEntries(nil) = %v, %v; want nothing, no error", out, err)
	}
	wantRevision(t, s, 7)
}
