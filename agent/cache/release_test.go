package cache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/testca"
)

func newReleaseCache(t *testing.T, after int, calls *atomic.Int32) (*Cache, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	s := &signer{t: t, ca: testca.New(t, td), ttl: time.Hour, keyID: "k1", now: clk.Now, refuse: map[string]bool{}}
	c, err := New(Config{TrustDomain: td, Client: s, Clock: clk, Rand: func() float64 { return 0.5 },
		ReleaseMemory: func() { calls.Add(1) }, ReleaseAfter: after, ReleaseEvery: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// Freed memory is returned after bulk changes only, at most once per
// interval; a release held back by the interval happens when it ends.
func TestReleaseMemoryAfterBulkChanges(t *testing.T) {
	var calls atomic.Int32
	c, clk := newReleaseCache(t, 4, &calls)
	var last time.Time
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/a", "unix:uid:1"), ent("b", "spiffe://example.org/b", "unix:uid:1")}})
	if d := c.release(clk.Now(), &last); d != 0 || calls.Load() != 0 {
		t.Fatalf("released after 2 changes (threshold 4): calls %d, wait %v", calls.Load(), d)
	}
	mustMint(t, c) // 2 SVIDs installed: 4 changes
	if d := c.release(clk.Now(), &last); d != 0 || calls.Load() != 1 {
		t.Fatalf("after 4 changes: calls %d, wait %v; want 1 call", calls.Load(), d)
	}
	if d := c.release(clk.Now(), &last); d != 0 || calls.Load() != 1 {
		t.Fatalf("released again without changes: calls %d, wait %v", calls.Load(), d)
	}

	mustApply(t, c, &nodev1.SyncResponse{Revision: 2, Full: true, Entries: []*typesv1.Entry{ent("c", "spiffe://example.org/c", "unix:uid:1")}})
	mustMint(t, c) // a and b dropped, c added and minted
	clk.Advance(4 * time.Second)
	if d := c.release(clk.Now(), &last); d != 6*time.Second || calls.Load() != 1 {
		t.Fatalf("4s after a release: calls %d, wait %v; want no call, wait 6s", calls.Load(), d)
	}
	clk.Advance(6 * time.Second)
	if d := c.release(clk.Now(), &last); d != 0 || calls.Load() != 2 {
		t.Fatalf("when the interval ended: calls %d, wait %v; want 2 calls", calls.Load(), d)
	}
}

// The minting loop makes the call after a bulk pass; a sync that only
// drops entries wakes it for that, and a call held back by the interval
// happens when the interval ends.
func TestRunReleasesMemory(t *testing.T) {
	var calls atomic.Int32
	c, clk := newReleaseCache(t, 2, &calls)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitCalls := func(want int32) {
		t.Helper()
		for calls.Load() < want {
			if ctx.Err() != nil {
				t.Fatalf("%d ReleaseMemory calls, want %d", calls.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/a", "unix:uid:1"), ent("b", "spiffe://example.org/b", "unix:uid:1")}})
	waitCalls(1)
	if _, n := c.Stats(); n != 2 {
		t.Fatalf("%d SVIDs held when memory was released, want 2", n)
	}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 2, Full: true}) // drops both
	if err := clk.WaitTimers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d calls within the interval, want 1", n)
	}
	clk.Advance(10 * time.Second)
	waitCalls(2)
}
