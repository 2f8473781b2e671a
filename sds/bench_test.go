package sds_test

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/metadata"

	"github.com/sigilhq/sigil/internal/envoytest"
)

// BenchmarkRotationFanout1000 holds 1,000 SotW streams (100 per client
// connection, as if ten Envoys multiplexed them) on one server and times,
// per rotation, how long it takes until the last stream has received the
// new SVID. It reports p50/p99 over the b.N rotations, and the heap and
// stack grown per open stream (client and server side together: both run
// in this process). Run with -benchtime=30x.
func BenchmarkRotationFanout1000(b *testing.B) {
	const streams, perConn = 1000, 100
	h := newHarness(b)
	h.setEntry("e1", h.ca.Issue(b, cartID), cartUID)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "test-selectors", cartUID)

	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	var all []*envoytest.SotW
	var client *envoytest.Client
	for i := range streams {
		if i%perConn == 0 {
			var err error
			client, err = envoytest.Dial(h.socket, envoytest.Node("bench"))
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
		}
		s, err := client.StreamSecrets(ctx, "default", "ROOTCA")
		if err != nil {
			b.Fatal(err)
		}
		resp, err := s.Recv(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.ACK(resp); err != nil {
			b.Fatal(err)
		}
		all = append(all, s)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	if n := h.src.Subscribers(); n != streams {
		b.Fatalf("%d subscriptions, want %d", n, streams)
	}

	svids := make([]*x509svid.SVID, b.N)
	for i := range svids {
		svids[i] = h.ca.Issue(b, cartID)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			slowest time.Duration
			failed  error
		)
		start := time.Now()
		for _, s := range all {
			wg.Go(func() {
				resp, err := s.Recv(ctx)
				d := time.Since(start)
				if err == nil {
					err = s.ACK(resp)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = err
				}
				slowest = max(slowest, d)
			})
		}
		start = time.Now()
		h.setEntry("e1", svids[i], cartUID)
		wg.Wait()
		if failed != nil {
			b.Fatal(failed)
		}
		lat = append(lat, slowest)
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(ms1.HeapAlloc-ms0.HeapAlloc)/streams, "heap-B/stream")
	b.ReportMetric(float64(ms1.StackInuse-ms0.StackInuse)/streams, "stack-B/stream")
}
