package nodeapi_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/sigilhq/sigil/agent/cache"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// manyEntries creates n entries under parent with the store's batch
// create, each about as large as a typical Kubernetes workload's entry.
func (e *env) manyEntries(t testing.TB, n int, parent string) {
	t.Helper()
	const batch = 10000
	for start := 0; start < n; start += batch {
		es := make([]store.Entry, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			sels, err := selector.ParseAll([]string{
				"k8s:ns:team-" + fmt.Sprint(i%97),
				fmt.Sprintf("k8s:sa:service-account-%06d", i),
				fmt.Sprintf("k8s:pod-label:app.kubernetes.io/name:workload-%06d", i),
			})
			if err != nil {
				t.Fatal(err)
			}
			es = append(es, store.Entry{
				SPIFFEID:  fmt.Sprintf("spiffe://example.org/ns/team-%d/sa/service-account-%06d", i%97, i),
				ParentID:  parent,
				Selectors: sels,
				DNSNames:  []string{fmt.Sprintf("workload-%06d.team-%d.svc.cluster.local", i, i%97)},
			})
		}
		if _, err := e.store.CreateEntries(e.ctx, "test", es); err != nil {
			t.Fatalf("create entries %d..%d: %v", start, start+len(es), err)
		}
	}
}

// sizeCheckingClient is the agent's node API client with every Sync
// message's size recorded; minting is out of the picture.
type sizeCheckingClient struct {
	nodev1.NodeClient
	maxSize chan int // the largest message seen so far
	parts   chan int // messages received
}

func (c *sizeCheckingClient) Sync(ctx context.Context, in *nodev1.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[nodev1.SyncResponse], error) {
	s, err := c.NodeClient.Sync(ctx, in, opts...)
	if err != nil {
		return nil, err
	}
	return &sizeCheckingStream{ServerStreamingClient: s, c: c}, nil
}

type sizeCheckingStream struct {
	grpc.ServerStreamingClient[nodev1.SyncResponse]
	c *sizeCheckingClient
}

func (s *sizeCheckingStream) Recv() (*nodev1.SyncResponse, error) {
	r, err := s.ServerStreamingClient.Recv()
	if err == nil {
		m := <-s.c.maxSize
		s.c.maxSize <- max(m, proto.Size(r))
		s.c.parts <- <-s.c.parts + 1
	}
	return r, err
}

// TestSyncHundredThousandEntries: an agent parented to 100,000 entries
// syncs them all through a real agent cache, over real gRPC and TLS with
// gRPC's default 4 MiB receive limit, every message far below it. Under
// the race detector (about 10x slower) it syncs 20,000 entries, which in one
// message would still be ~7 MB, over the limit.
func TestSyncHundredThousandEntries(t *testing.T) {
	n := 100000
	if raceEnabled {
		n = 20000
	}
	e := newEnv(t)
	a := e.joinAgent(t)
	start := time.Now()
	e.manyEntries(t, n, a.id)
	t.Logf("created %d entries in %s", n, time.Since(start).Round(time.Millisecond))

	client := &sizeCheckingClient{NodeClient: a.client, maxSize: make(chan int, 1), parts: make(chan int, 1)}
	client.maxSize <- 0
	client.parts <- 0
	c, err := cache.New(cache.Config{
		TrustDomain: td,
		Client:      client,
		NewKey:      func() (crypto.Signer, error) { return nil, errors.New("minting is not under test") },
		RetryMin:    time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	start = time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for !c.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("the agent cache did not sync within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("synced in %s", time.Since(start).Round(time.Millisecond))
	if got, _ := c.Stats(); got != n {
		t.Fatalf("agent cache holds %d entries, want %d", got, n)
	}
	maxSize, parts := <-client.maxSize, <-client.parts
	t.Logf("%d messages, largest %d bytes", parts, maxSize)
	if parts < 2 {
		t.Errorf("the full set came in %d message(s), want it split", parts)
	}
	if maxSize > 2<<20 {
		t.Errorf("largest sync message %d bytes, want at most 2 MiB", maxSize)
	}
	rev, err := e.store.Revision(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Revision(); got != rev {
		t.Errorf("agent at revision %d, store at %d", got, rev)
	}
}
