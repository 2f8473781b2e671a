package nodeapi_test

import (
	"context"
	"crypto"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent/cache"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeapi"
)

// BenchmarkFullSync100k: one full sync of 100,000 entries of one agent,
// from a real SQLite store over real gRPC and TLS, applied to a real agent
// cache. "one message" is the behaviour before split responses (it needs
// the client's receive limit raised past gRPC's 4 MiB default, else it
// fails); "parts" is the split stream. peak-heap-MB samples the heap of
// the process (CA and agent together) every 5 ms.
func BenchmarkFullSync100k(b *testing.B) {
	for _, bb := range []struct {
		name  string
		items int
		bytes int
		opts  []grpc.CallOption
	}{
		{"one message", 1 << 30, 1 << 30, []grpc.CallOption{grpc.MaxCallRecvMsgSize(1 << 30)}},
		{"parts", 0, 0, nil},
	} {
		b.Run(bb.name, func(b *testing.B) {
			e := newEnv(b, func(c *nodeapi.Config) { c.SyncPartItems, c.SyncPartBytes = bb.items, bb.bytes })
			a := e.joinAgent(b)
			e.manyEntries(b, 100000, a.id)
			var peak atomic.Uint64
			b.ResetTimer()
			for range b.N {
				runtime.GC()
				peak.Store(0)
				stop := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					var ms runtime.MemStats
					t := time.NewTicker(5 * time.Millisecond)
					defer t.Stop()
					for {
						runtime.ReadMemStats(&ms)
						if ms.HeapInuse > peak.Load() {
							peak.Store(ms.HeapInuse)
						}
						select {
						case <-stop:
							return
						case <-t.C:
						}
					}
				}()
				c, err := cache.New(cache.Config{TrustDomain: td, Client: a.client, NewKey: func() (crypto.Signer, error) { return nil, errors.New("no minting") }})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(e.ctx)
				stream, err := a.client.Sync(ctx, &nodev1.SyncRequest{}, bb.opts...)
				if err != nil {
					b.Fatal(err)
				}
				merged := &nodev1.SyncResponse{}
				for first := true; ; first = false {
					r, err := stream.Recv()
					if err != nil {
						b.Fatal(err)
					}
					if first {
						merged = r
					} else {
						merged.Entries = append(merged.Entries, r.GetEntries()...)
						merged.Bundles = append(merged.Bundles, r.GetBundles()...)
					}
					if !r.GetMore() {
						break
					}
				}
				merged.More = false
				if err := c.Apply(merged); err != nil {
					b.Fatal(err)
				}
				cancel()
				close(stop)
				<-sampled
				if n, _ := c.Stats(); n != 100000 {
					b.Fatalf("synced %d entries", n)
				}
			}
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
		})
	}
}
