package nodeapi_test

import (
	"fmt"
	"testing"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/store"
)

// BenchmarkSignX509SVIDs signs batches of 50 CSRs over real gRPC and TLS
// with a real CA and SQLite store; ns/op is per CSR.
func BenchmarkSignX509SVIDs(b *testing.B) {
	e := newEnv(b)
	a := e.joinAgent(b)
	const batch = 50
	entries := make([]store.Entry, batch)
	for i := range entries {
		entries[i] = e.entry(b, fmt.Sprintf("spiffe://example.org/w/%d", i), a.id)
	}
	reqs := make([]*nodev1.CSRForEntry, batch)
	for i, w := range entries {
		reqs[i] = csrFor(b, w)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		res, err := a.client.SignX509SVIDs(e.ctx, &nodev1.SignX509SVIDsRequest{Csrs: reqs})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res.GetResults() {
			if r.GetError() != "" {
				b.Fatal(r.GetError())
			}
		}
	}
}
