package sqlstore_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/sigilhq/sigil/ca/store"
)

func refIDs(refs []store.EntryRef) []string {
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.ID+"@"+r.ParentID)
	}
	slices.Sort(out)
	return out
}

// ChangeSummary names what changed after a revision (created, updated with
// its parent now, deleted with no parent) and overflows past its limit;
// ChangedEntries reads one parent's changes in a revision window, in pages.
func TestChangeSummaryAndChangedEntries(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			s := b.openFresh(t)
			defer s.Close()
			a := batchEntries(t, "a", 5)
			for i := range a {
				a[i].ParentID = "spiffe://example.org/agent-a"
			}
			created, err := s.CreateEntries(ctx, "t", a)
			if err != nil {
				t.Fatal(err)
			}
			base, err := s.Revision(ctx)
			if err != nil {
				t.Fatal(err)
			}
			other, err := s.CreateEntries(ctx, "t", batchEntries(t, "b", 3))
			if err != nil {
				t.Fatal(err)
			}
			moved := created[0]
			moved.ParentID, moved.Revision = "spiffe://example.org/agent-b", 0
			if _, err := s.UpdateEntry(ctx, "t", moved); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteEntry(ctx, "t", created[1].ID); err != nil {
				t.Fatal(err)
			}
			top, err := s.Revision(ctx)
			if err != nil {
				t.Fatal(err)
			}

			sum, err := s.ChangeSummary(ctx, base, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := []store.EntryRef{{ID: moved.ID, ParentID: moved.ParentID}, {ID: created[1].ID}}
			for _, e := range other {
				want = append(want, store.EntryRef{ID: e.ID, ParentID: e.ParentID})
			}
			if sum.After != base || sum.Revision != top || sum.Overflow || !slices.Equal(refIDs(sum.Changed), refIDs(want)) {
				t.Fatalf("summary after %d = %+v, want revision %d and %v", base, sum, top, refIDs(want))
			}
			if sum, err = s.ChangeSummary(ctx, base, 4); err != nil || !sum.Overflow || sum.Changed != nil || sum.Revision != top {
				t.Fatalf("summary with limit 4 of 5 changes = %+v, %v; want overflow", sum, err)
			}
			if sum, err = s.ChangeSummary(ctx, top, 1); err != nil || sum.Overflow || len(sum.Changed) != 0 {
				t.Fatalf("summary after the top revision = %+v, %v; want nothing", sum, err)
			}

			// Agent a's entries changed after revision 0, two per page.
			var got []string
			after := int64(0)
			for {
				page, err := s.ChangedEntries(ctx, []string{"spiffe://example.org/agent-a", "spiffe://example.org/none"}, after, top, 2)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range page {
					if e.Revision <= after || e.Revision > top {
						t.Fatalf("entry %s at revision %d outside (%d, %d]", e.ID, e.Revision, after, top)
					}
					got = append(got, e.ID)
					after = e.Revision
				}
				if len(page) < 2 {
					break
				}
			}
			wantIDs := []string{created[2].ID, created[3].ID, created[4].ID}
			if !slices.Equal(got, wantIDs) {
				t.Fatalf("agent a's entries in pages: %v, want %v", got, wantIDs)
			}
			page, err := s.ChangedEntries(ctx, []string{"spiffe://example.org/agent-b"}, base, top, 10)
			if err != nil || len(page) != 1 || page[0].ID != moved.ID {
				t.Fatalf("agent b's changes after %d: %v, %v; want the moved entry", base, page, err)
			}

			bad := []struct {
				name string
				err  error
			}{
				{"summary limit 0", func() error { _, err := s.ChangeSummary(ctx, 0, 0); return err }()},
				{"summary limit over max", func() error { _, err := s.ChangeSummary(ctx, 0, store.MaxChangePage+1); return err }()},
				{"summary negative revision", func() error { _, err := s.ChangeSummary(ctx, -1, 1); return err }()},
				{"no parents", func() error { _, err := s.ChangedEntries(ctx, nil, 0, top, 1); return err }()},
				{"too many parents", func() error {
					ps := make([]string, store.MaxChangedParents+1)
					for i := range ps {
						ps[i] = fmt.Sprintf("spiffe://example.org/p%d", i)
					}
					_, err := s.ChangedEntries(ctx, ps, 0, top, 1)
					return err
				}()},
				{"window backwards", func() error { _, err := s.ChangedEntries(ctx, []string{"x"}, top, 0, 1); return err }()},
				{"entries limit over max", func() error {
					_, err := s.ChangedEntries(ctx, []string{"x"}, 0, top, store.MaxChangePage+1)
					return err
				}()},
			}
			for _, c := range bad {
				if !errors.Is(c.err, store.ErrInvalid) {
					t.Errorf("%s: error %v, want ErrInvalid", c.name, c.err)
				}
			}
		})
	}
}
