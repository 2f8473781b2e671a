package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent/cache"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

func newTestFleet() *fleet {
	return &fleet{td: spiffeid.RequireTrustDomainFromString("fleet.test"), pending: map[string]time.Time{},
		delOwner: map[string]*simAgent{}, errs: map[string]int{}}
}

// replay is a Sync stream that delivers resps, then io.EOF.
type replay struct {
	grpc.ServerStreamingClient[nodev1.SyncResponse]
	resps []*nodev1.SyncResponse
}

func (r *replay) Recv() (*nodev1.SyncResponse, error) {
	if len(r.resps) == 0 {
		return nil, io.EOF
	}
	resp := r.resps[0]
	r.resps = r.resps[1:]
	return resp, nil
}

// A full response split in parts tells a deletion by leaving the entry out
// of every part: it is seen at the last part, and only if no part lists it.
func TestFullSplitResponseSeesDeletions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		lastPart  []string // entry IDs in the second part
		wantSeen  bool
		wantAfter int // changes still awaited
	}{
		{"left out", []string{"kept-2"}, true, 0},
		{"listed in the last part", []string{"kept-2", "gone"}, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFleet()
			a := &simAgent{f: f}
			f.expectDelete("gone", a, time.Now())
			var last []*typesv1.Entry
			for _, id := range tc.lastPart {
				last = append(last, &typesv1.Entry{Id: id})
			}
			s := &watchStream{a: a, ctx: context.Background(), ServerStreamingClient: &replay{resps: []*nodev1.SyncResponse{
				{Revision: 7, Full: true, More: true, Entries: []*typesv1.Entry{{Id: "kept-1"}}},
				{Revision: 7, Entries: last},
			}}}
			for range 2 {
				if _, err := s.Recv(); err != nil {
					t.Fatal(err)
				}
			}
			if got := f.awaited(); got != tc.wantAfter {
				t.Errorf("%d changes awaited after the full response, want %d", got, tc.wantAfter)
			}
			if len(f.lags) == 1 != tc.wantSeen {
				t.Errorf("%d lag samples, want the deletion seen: %v", len(f.lags), tc.wantSeen)
			}
		})
	}
}

// The fleet settles only once every change written has been seen: a create
// and a deletion on their way to one agent leave its entry count as it
// should be, which is all waitConsistent checks.
func TestSettledAwaitsEveryChange(t *testing.T) {
	f := newTestFleet()
	a := &simAgent{f: f}
	c, err := cache.New(cache.Config{TrustDomain: f.td, Client: nodev1.NewNodeClient(swapConn{a})})
	if err != nil {
		t.Fatal(err)
	}
	a.cache = c
	w := &writer{f: f, agents: []*simAgent{a}, expected: map[int]int{}}
	ctx := context.Background()
	f.expect("spiffe://fleet.test/fleet/w/2", time.Now())
	f.expectDelete("entry-1", a, time.Now())

	if err := w.waitConsistent(ctx, 0); err != nil {
		t.Fatalf("waitConsistent: %v, want the counts to match", err)
	}
	err = w.waitSettled(ctx, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "2 changes not seen") {
		t.Fatalf("waitSettled with a create and a deletion on their way: %v, want 2 changes not seen", err)
	}
	f.seen("spiffe://fleet.test/fleet/w/2", time.Now())
	f.seen("deleted:entry-1", time.Now())
	if err := w.waitSettled(ctx, 0); err != nil {
		t.Fatalf("waitSettled once both arrived: %v", err)
	}
}

// TestTimelineWindows: each change lands in the window of its write time
// with its own lag, errors in the window they happened in, and nothing
// from before the measured phase.
func TestTimelineWindows(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	lagAt := []time.Time{at(-time.Second), at(time.Second), at(2 * time.Second), at(6 * time.Second), at(11 * time.Second)}
	lags := []time.Duration{time.Hour, 10 * time.Millisecond, 30 * time.Millisecond, 2 * time.Second, 5 * time.Millisecond}
	errAt := []time.Time{at(-time.Second), at(7 * time.Second), at(8 * time.Second)}
	ws := timeline(start, at(12*time.Second), lagAt, lags, errAt)
	if len(ws) != 3 {
		t.Fatalf("%d windows for 12 s, want 3", len(ws))
	}
	want := []window{
		{Start: 0, Changes: 2, P50: 30 * time.Millisecond, P99: 30 * time.Millisecond, Max: 30 * time.Millisecond},
		{Start: 5 * time.Second, Changes: 1, P50: 2 * time.Second, P99: 2 * time.Second, Max: 2 * time.Second, Errors: 2},
		{Start: 10 * time.Second, Changes: 1, P50: 5 * time.Millisecond, P99: 5 * time.Millisecond, Max: 5 * time.Millisecond},
	}
	for i := range want {
		if ws[i] != want[i] {
			t.Errorf("window %d = %+v, want %+v", i, ws[i], want[i])
		}
	}
}
