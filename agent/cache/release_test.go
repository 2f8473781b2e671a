package cache

import (
	"context"
	"fmt"
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
		ReleaseMemory: func() { calls.Add(1) }, ReleaseAfter: after, ReleaseEvery: 10 * time.Second, ReleaseSettle: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// Freed memory is returned after bulk changes only, once they paused, at
// most once per interval; a release held back happens when it may.
func TestReleaseMemoryAfterBulkChanges(t *testing.T) {
	var calls atomic.Int32
	c, clk := newReleaseCache(t, 4, &calls)
	var last time.Time
	check := func(what string, wantWait time.Duration, wantCalls int32) {
		t.Helper()
		if d := c.release(clk.Now(), &last); d != wantWait || calls.Load() != wantCalls {
			t.Fatalf("%s: wait %v, %d calls; want wait %v, %d calls", what, d, calls.Load(), wantWait, wantCalls)
		}
	}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/a", "unix:uid:1"), ent("b", "spiffe://example.org/b", "unix:uid:1")}})
	check("after 2 changes (threshold 4)", 0, 0)
	mustMint(t, c) // 2 SVIDs installed: 4 changes
	check("right after 4 changes", 2*time.Second, 0)
	clk.Advance(time.Second)
	check("1s after them", time.Second, 0)
	clk.Advance(time.Second)
	check("when they settled", 0, 1)
	check("without changes since", 0, 1)

	mustApply(t, c, &nodev1.SyncResponse{Revision: 2, Full: true, Entries: []*typesv1.Entry{ent("c", "spiffe://example.org/c", "unix:uid:1")}})
	mustMint(t, c) // a and b dropped, c added and minted
	clk.Advance(4 * time.Second)
	check("settled 4s after a release", 6*time.Second, 1)
	clk.Advance(6 * time.Second)
	check("when the interval ended", 0, 2)

	// Changes that never pause are released 30s after the first.
	for i := range 31 {
		mustApply(t, c, &nodev1.SyncResponse{Revision: int64(3 + i), Entries: []*typesv1.Entry{ent(fmt.Sprintf("d%d", i), "spiffe://example.org/d", "unix:uid:1")}})
		c.release(clk.Now(), &last)
		if want := int32(2 + i/30); calls.Load() != want {
			t.Fatalf("changes every second for %ds: %d calls, want %d", i, calls.Load(), want)
		}
		clk.Advance(time.Second)
	}
}

// The minting loop makes the call once a bulk pass settled; a sync that
// only drops entries wakes it for that, and a call held back by the
// interval happens when the interval ends.
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
	for _, n := c.Stats(); n != 2; _, n = c.Stats() {
		if ctx.Err() != nil {
			t.Fatal("Run minted nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := clk.WaitTimers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d calls before the changes settled, want 0", n)
	}
	clk.Advance(2 * time.Second)
	waitCalls(1)
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
