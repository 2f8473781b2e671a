package sqlstore_test

import (
	"errors"
	"fmt"
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
