package cache

import (
	"testing"

	"google.golang.org/protobuf/proto"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// FuzzApply feeds arbitrary Sync responses to a cache holding SVIDs: it
// must never panic, and a response it refuses must leave it unchanged.
func FuzzApply(f *testing.F) {
	seed := func(r *nodev1.SyncResponse) {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&nodev1.SyncResponse{Revision: 2, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/a", "unix:uid:1")}})
	seed(&nodev1.SyncResponse{Revision: 3, Full: true, DeletedEntryIds: []string{"b"}, TaintedX509KeyIds: []string{"k1"}})
	seed(&nodev1.SyncResponse{Revision: 4, RevokedX509KeyIds: []string{"k1"}, Bundles: []*typesv1.Bundle{{TrustDomain: "example.org"}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp nodev1.SyncResponse
		if err := proto.Unmarshal(data, &resp); err != nil {
			return
		}
		c, _, _ := newTestCache(t, 100)
		mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
			ent("a", "spiffe://example.org/a", "unix:uid:1"), ent("b", "spiffe://example.org/b", "unix:uid:2"),
		}})
		mustMint(t, c)
		sub := c.Subscribe(sels("unix:uid:1"))
		defer sub.Close()
		<-sub.Updates()
		before, _ := c.Stats()
		if err := c.Apply(&resp); err != nil {
			if n, _ := c.Stats(); n != before || c.Revision() != 1 {
				t.Fatalf("refused response changed the cache: %v", err)
			}
			return
		}
		checkCount(t, c)
		if _, err := c.MintDue(t.Context()); err != nil {
			t.Fatal(err)
		}
		checkCount(t, c)
	})
}
