package sds

import (
	"runtime"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/testca"
)

// TestCertCacheForgetsCollectedSVIDs: the shared cache of packed
// certificates must not keep a private key alive once the source has let
// go of its SVID.
func TestCertCacheForgetsCollectedSVIDs(t *testing.T) {
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	c := newCertCache()
	svid := ca.Issue(t, "spiffe://example.org/a")
	builds := 0
	build := func() (*resource, error) { builds++; return packSVID("default", svid) }
	first, err := c.get("default", svid, build)
	if err != nil || first == nil {
		t.Fatalf("get: %v, %v", first, err)
	}
	again, _ := c.get("default", svid, build)
	if again != first || builds != 1 {
		t.Fatalf("second get built again (%d builds)", builds)
	}
	if _, err := c.get("spiffe://example.org/a", svid, func() (*resource, error) { return packSVID("spiffe://example.org/a", svid) }); err != nil {
		t.Fatal(err)
	}
	if c.len() != 2 {
		t.Fatalf("cache holds %d, want 2", c.len())
	}
	svid, build = nil, nil
	deadline := time.Now().Add(30 * time.Second)
	for c.len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("cache still holds %d entries after the SVID was dropped", c.len())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
