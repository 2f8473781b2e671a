package cache

import (
	"runtime"
	"testing"
	"time"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/clock"
)

// The cache keeps SVIDs unparsed: workloads get the same SVID back after
// the parsed form was collected, subscribers of one SVID share one parsed
// copy, and a snapshot carries the raw bytes that Restore takes back.
func TestHeldSVIDsParseOnDemandAndRoundTrip(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/a", "unix:uid:1"),
		ent("b", "spiffe://example.org/b", "unix:uid:2"),
	}, Bundles: []*typesv1.Bundle{bundlePB(t, "example.org", s.ca, 1)}})
	if _, err := c.MintDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	runtime.GC() // the parsed forms made at minting are held by no one
	sub1, sub2 := c.Subscribe(sels("unix:uid:1")), c.Subscribe(sels("unix:uid:1"))
	defer sub1.Close()
	defer sub2.Close()
	u1, u2 := latest(t, sub1), latest(t, sub2)
	if len(u1.Identities) != 1 || len(u2.Identities) != 1 || u1.Identities[0].SVID.ID.String() != "spiffe://example.org/a" {
		t.Fatalf("updates: %v / %v", ids(u1), ids(u2))
	}
	if u1.Identities[0].SVID != u2.Identities[0].SVID {
		t.Error("two subscribers of one SVID got two parsed copies")
	}
	leaf := u1.Identities[0].SVID.Certificates[0]

	snap := c.Snapshot()
	if len(snap.Raw) != 2 || len(snap.SVIDs) != 0 {
		t.Fatalf("snapshot: %d raw, %d parsed SVIDs; want 2 raw", len(snap.Raw), len(snap.SVIDs))
	}
	r, err := New(Config{TrustDomain: td, Client: s, Clock: clock.NewFake(clk.Now().Add(time.Minute)), Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	kept, dropped, err := r.Restore(snap)
	if err != nil || kept != 2 || dropped != 0 {
		t.Fatalf("restore: kept %d dropped %d: %v", kept, dropped, err)
	}
	sub := r.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	u := latest(t, sub)
	if len(u.Identities) != 1 || !u.Identities[0].SVID.Certificates[0].Equal(leaf) {
		t.Fatalf("restored: %v", ids(u))
	}

	// A damaged raw SVID is dropped, not restored.
	bad := r.Snapshot()
	bad.Raw["a"] = RawSVID{Chain: [][]byte{[]byte("junk")}, Key: bad.Raw["a"].Key}
	r2, _ := New(Config{TrustDomain: td, Client: s, Clock: clk, Rand: func() float64 { return 0.5 }})
	if kept, dropped, err := r2.Restore(bad); err != nil || kept != 1 || dropped != 1 {
		t.Fatalf("restore with a damaged SVID: kept %d dropped %d: %v", kept, dropped, err)
	}
}
