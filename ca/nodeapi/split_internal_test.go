package nodeapi

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

func TestSplit(t *testing.T) {
	resp := &nodev1.SyncResponse{
		Revision:          42,
		Full:              true,
		TaintedX509KeyIds: []string{"k1"},
		Bundles:           []*typesv1.Bundle{{TrustDomain: "example.org", X509Authorities: [][]byte{make([]byte, 3000)}}},
		DeletedEntryIds:   []string{"gone-1", "gone-2"},
	}
	for i := range 2500 {
		resp.Entries = append(resp.Entries, &typesv1.Entry{Id: fmt.Sprintf("e%05d", i), SpiffeId: fmt.Sprintf("spiffe://example.org/w/%d", i), Selectors: []string{"unix:uid:1000"}})
	}
	for _, tt := range []struct {
		name               string
		maxItems, maxBytes int
		wantParts          int
	}{
		{"fits", 10000, 1 << 20, 1},
		{"by count", 1000, 1 << 20, 3},
		{"by bytes", 100000, 16 << 10, 0},
		{"one item each", 1, 1 << 20, 2503},
	} {
		t.Run(tt.name, func(t *testing.T) {
			parts := split(resp, tt.maxItems, tt.maxBytes)
			if tt.wantParts > 0 && len(parts) != tt.wantParts {
				t.Fatalf("%d parts, want %d", len(parts), tt.wantParts)
			}
			if tt.wantParts == 0 && len(parts) < 5 {
				t.Fatalf("%d parts, want a split by bytes", len(parts))
			}
			merged := &nodev1.SyncResponse{}
			for i, p := range parts {
				if p.GetRevision() != 42 {
					t.Errorf("part %d: revision %d", i, p.GetRevision())
				}
				if p.GetMore() != (i < len(parts)-1) {
					t.Errorf("part %d of %d: more = %v", i, len(parts), p.GetMore())
				}
				if i > 0 && (p.GetFull() || len(p.GetTaintedX509KeyIds()) > 0) {
					t.Errorf("part %d carries full or key lists", i)
				}
				items := len(p.GetEntries()) + len(p.GetDeletedEntryIds()) + len(p.GetBundles())
				if items > tt.maxItems {
					t.Errorf("part %d: %d items, bound %d", i, items, tt.maxItems)
				}
				if sz := proto.Size(p); sz > tt.maxBytes && items > 1 {
					t.Errorf("part %d: %d bytes with %d items, bound %d", i, sz, items, tt.maxBytes)
				}
				merged.Entries = append(merged.Entries, p.GetEntries()...)
				merged.DeletedEntryIds = append(merged.DeletedEntryIds, p.GetDeletedEntryIds()...)
				merged.Bundles = append(merged.Bundles, p.GetBundles()...)
			}
			merged.Revision, merged.Full, merged.TaintedX509KeyIds = 42, parts[0].GetFull(), parts[0].GetTaintedX509KeyIds()
			if !proto.Equal(merged, resp) {
				t.Error("the parts, merged, are not the response")
			}
		})
	}
}
