package cache

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"weak"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

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

// BenchmarkMemoryPerThousandSVIDs reports what the cache holds per 1,000
// entries with their SVIDs (key, chain, parsed entry) at n SVIDs: the live
// heap after a GC, and the growth of the process's resident set (VmRSS),
// which also counts the garbage the Go runtime keeps between GCs (read
// before the cache's ReleaseMemory would run), and what that
// ReleaseMemory call (debug.FreeOSMemory) costs at n SVIDs: wall time and
// the process's CPU time (all threads) over it.
func BenchmarkMemoryPerThousandSVIDs(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("svids=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				runtime.GC()
				debug.FreeOSMemory()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				rssBefore := vmRSS(b)
				c, _, _ := newTestCache(b, 100)
				fill(b, c, n)
				rssAfter := vmRSS(b)
				t0, cpu0 := time.Now(), cpuTime(b)
				debug.FreeOSMemory() // what the cache's ReleaseMemory does after bulk changes
				release, releaseCPU := time.Since(t0), cpuTime(b)-cpu0
				runtime.ReadMemStats(&after)
				per := float64(n) / 1000
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/per/1024, "heap-KiB/1000svids")
				b.ReportMetric(float64(rssAfter-rssBefore)/per/1024, "rss-KiB/1000svids")
				b.ReportMetric(float64(release.Microseconds())/1000, "release-ms")
				b.ReportMetric(float64(releaseCPU.Microseconds())/1000, "release-cpu-ms")
				runtime.KeepAlive(c)
			}
		})
	}
}

// cpuTime is the user and system CPU time of this process, all threads.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmRSS is this process's resident set in bytes, from /proc/self/status.
func vmRSS(b *testing.B) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkX509Fetch is the cache's share of one Workload API X.509 fetch
// with n SVIDs held: subscribe with the workload's selectors, take the
// Update, close. "parsed" finds the SVID's parsed form still held by
// another subscriber; "cold" parses it from the kept bytes (leaf DER and
// PKCS#8 key), as after the parsed form was collected.
func BenchmarkX509Fetch(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		c, _, _ := newTestCache(b, 100)
		fill(b, c, n)
		want := sels("unix:uid:1", "unix:path:/bin/7")
		for _, cold := range []bool{false, true} {
			name := fmt.Sprintf("svids=%d/parsed", n)
			if cold {
				name = fmt.Sprintf("svids=%d/cold", n)
			}
			b.Run(name, func(b *testing.B) {
				keep := c.Subscribe(want) // holds the parsed form between fetches
				defer keep.Close()
				<-keep.Updates()
				b.ReportAllocs()
				for b.Loop() {
					if cold {
						c.mu.Lock()
						c.entries["e000007"].svid.parsed = weak.Pointer[x509svid.SVID]{}
						c.mu.Unlock()
					}
					s := c.Subscribe(want)
					u := <-s.Updates()
					s.Close()
					if len(u.Identities) != 1 {
						b.Fatalf("%d identities, want 1", len(u.Identities))
					}
				}
			})
		}
	}
}

// BenchmarkHeldParse is what a cold X.509 fetch adds per SVID: the parsed
// form made again from the kept leaf DER and PKCS#8 key.
func BenchmarkHeldParse(b *testing.B) {
	c, _, _ := newTestCache(b, 100)
	fill(b, c, 1)
	h := c.entries["e000000"].svid
	b.ReportAllocs()
	for b.Loop() {
		h.parsed = weak.Pointer[x509svid.SVID]{}
		if _, err := h.svid(); err != nil {
			b.Fatal(err)
		}
	}
}
