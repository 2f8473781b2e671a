package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

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
			if got := len(f.pending); got != tc.wantAfter {
				t.Errorf("%d changes awaited after the full response, want %d", got, tc.wantAfter)
			}
			if len(f.lags) == 1 != tc.wantSeen {
				t.Errorf("%d lag samples, want the deletion seen: %v", len(f.lags), tc.wantSeen)
			}
		})
	}
}
