package cache

import (
	"fmt"
	"runtime"
	"testing"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

func fill(b *testing.B, c *Cache, n int) {
	b.Helper()
	entries := make([]*typesv1.Entry, 0, n)
	for i := range n {
		entries = append(entries, ent(fmt.Sprintf("e%06d", i), fmt.Sprintf("spiffe://example.org/w/%d", i), "unix:uid:1", fmt.Sprintf("unix:path:/bin/%d", i)))
	}
	if err := c.Apply(&nodev1.SyncResponse{Revision: 1, Full: true, Entries: entries}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.MintDue(b.Context()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkChangeToSubscriber is the agent's own share of an entry change:
// a Sync response changing one entry's selectors, applied, fanned out to
// the one subscriber it concerns among 100 others, with n entries held.
func BenchmarkChangeToSubscriber(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			c, _, _ := newTestCache(b, 100)
			fill(b, c, n)
			for i := range 100 {
				s := c.Subscribe(sels(fmt.Sprintf("unix:uid:%d", 1000+i)))
				defer s.Close()
			}
			sub := c.Subscribe(sels("unix:uid:1", "unix:path:/bin/7", "unix:gid:1"))
			defer sub.Close()
			<-sub.Updates()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				extra := "unix:gid:1"
				if i%2 == 1 {
					extra = "unix:path:/bin/7"
				}
				if err := c.Apply(&nodev1.SyncResponse{Revision: int64(i + 2), Entries: []*typesv1.Entry{
					ent("e000007", "spiffe://example.org/w/7", "unix:uid:1", extra),
				}}); err != nil {
					b.Fatal(err)
				}
				<-sub.Updates()
			}
		})
	}
}

// BenchmarkMemoryPerThousandSVIDs reports the heap the cache holds per
// 1,000 entries with their SVIDs (key, chain, parsed entry).
func BenchmarkMemoryPerThousandSVIDs(b *testing.B) {
	const n = 10000
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c, _, _ := newTestCache(b, 100)
		fill(b, c, n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n/1000)/1024, "KiB/1000svids")
		runtime.KeepAlive(c)
	}
}
