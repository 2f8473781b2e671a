package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// BenchmarkEntryChangeToClient measures, end to end over real components,
// the time from an entry change in the CA's store to a go-spiffe client on
// the agent's socket seeing the new SVID: the node API noticing the change
// (it polls the store every 50ms here, 200ms by default), the Sync push,
// the agent minting over SignX509SVIDs, and the Workload API stream. The
// agent holds entries SVIDs; one of them is the client's.
func BenchmarkEntryChangeToClient(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) { benchEntryChange(b, n) })
	}
}

func benchEntryChange(b *testing.B, n int) {
	tc := newTestCA(b, time.Hour)
	tok := tc.token(b)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	uid := fmt.Sprintf("unix:uid:%d", os.Getuid())
	mine := tc.entry(b, agentID, "spiffe://example.org/client", uid)
	ctx := context.Background()
	for start := 1; start < n; start += 500 {
		var batch []store.Entry
		for i := start; i < min(start+500, n); i++ {
			sels, err := selector.ParseAll([]string{uid, fmt.Sprintf("unix:path:/nonexistent/%d", i)})
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, store.Entry{SPIFFEID: fmt.Sprintf("spiffe://example.org/w/%d", i), ParentID: agentID, Selectors: sels})
		}
		if _, err := tc.store.CreateEntries(ctx, "bench", batch); err != nil {
			b.Fatal(err)
		}
	}
	sock := filepath.Join(b.TempDir(), "agent.sock")
	a, _, _, _ := runAgent(b, tc, filepath.Join(b.TempDir(), "agent"), tok, serveSocket(b, sock))
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, svids := a.Cache().Stats(); svids == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("agent did not mint every SVID")
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitSocket(b, sock)
	client, err := gsw.New(ctx, gsw.WithAddr("unix://"+sock))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	updates := make(chan *gsw.X509Context, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = client.WatchX509Context(wctx, watcher{updates}) }()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := fmt.Sprintf("v%d.example.org", i)
		mine.DNSNames = []string{want}
		start := time.Now()
		var err error
		if mine, err = tc.store.UpdateEntry(ctx, "bench", mine); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
	wait:
		for {
			select {
			case xc := <-updates:
				if len(xc.SVIDs) == 1 && slices.Contains(xc.SVIDs[0].Certificates[0].DNSNames, want) {
					break wait
				}
			case <-timeout:
				b.Fatalf("no update with %s", want)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
}

type watcher struct{ ch chan<- *gsw.X509Context }

func (w watcher) OnX509ContextUpdate(xc *gsw.X509Context) { w.ch <- xc }
func (w watcher) OnX509ContextWatchError(error)           {}

// BenchmarkFetchX509SVID is one go-spiffe FetchX509SVID call over the
// agent's socket: connection, peer-credential attestation, the cache
// lookup and the response.
func BenchmarkFetchX509SVID(b *testing.B) {
	tc := newTestCA(b, time.Hour)
	tok := tc.token(b)
	tc.entry(b, "spiffe://example.org/sigil/agent/join_token/"+tok, "spiffe://example.org/client", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	sock := filepath.Join(b.TempDir(), "agent.sock")
	runAgent(b, tc, filepath.Join(b.TempDir(), "agent"), tok, serveSocket(b, sock))
	waitSocket(b, sock)
	ctx := context.Background()
	client, err := gsw.New(ctx, gsw.WithAddr("unix://"+sock))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := client.FetchX509SVID(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Run("one-client", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := client.FetchX509SVID(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new-connection", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := gsw.FetchX509SVID(ctx, gsw.WithAddr("unix://"+sock)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
