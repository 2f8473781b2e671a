package cache

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// partsClient serves one Sync stream whose messages the test hands over
// one at a time; recv signals each Recv call.
type partsClient struct {
	*signer
	msgs chan *nodev1.SyncResponse
	recv chan struct{}
}

func (p *partsClient) Sync(ctx context.Context, _ *nodev1.SyncRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[nodev1.SyncResponse], error) {
	return &partsStream{ctx: ctx, p: p}, nil
}

type partsStream struct {
	grpc.ServerStreamingClient[nodev1.SyncResponse]
	ctx context.Context
	p   *partsClient
}

func (s *partsStream) Recv() (*nodev1.SyncResponse, error) {
	select {
	case s.p.recv <- struct{}{}:
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
	select {
	case m, ok := <-s.p.msgs:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// TestSplitResponseAppliedWhole: the parts of a split response are applied
// together once the last arrives; until then the cache serves what it had.
func TestSplitResponseAppliedWhole(t *testing.T) {
	c, s, _ := newTestCache(t, 10)
	p := &partsClient{signer: s, msgs: make(chan *nodev1.SyncResponse), recv: make(chan struct{})}
	c.cfg.Client = p
	mustApply(t, c, &nodev1.SyncResponse{Revision: 5, Full: true, Entries: []*typesv1.Entry{ent("old", "spiffe://example.org/old", "unix:uid:1")}})

	done := make(chan error, 1)
	go func() { _, err := c.syncOnce(t.Context()); done <- err }()
	step := func(m *nodev1.SyncResponse) {
		t.Helper()
		select {
		case <-p.recv:
		case <-time.After(5 * time.Second):
			t.Fatal("the cache did not ask for the next message")
		}
		if m == nil {
			close(p.msgs)
			return
		}
		p.msgs <- m
	}
	step(&nodev1.SyncResponse{Revision: 9, Full: true, More: true, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/a", "unix:uid:1")}})
	step(&nodev1.SyncResponse{Revision: 9, More: true, Entries: []*typesv1.Entry{ent("b", "spiffe://example.org/b", "unix:uid:1")}})
	step(&nodev1.SyncResponse{Revision: 9, Entries: []*typesv1.Entry{ent("c", "spiffe://example.org/c", "unix:uid:1")}})
	// Not applied until the third part was received; the call just made
	// waits for the fourth message, so the third was applied.
	<-p.recv
	if n, _ := c.Stats(); n != 3 || c.Revision() != 9 {
		t.Fatalf("after the last part: %d entries at revision %d, want 3 at 9", n, c.Revision())
	}
	c.mu.Lock()
	_, old := c.entries["old"]
	c.mu.Unlock()
	if old {
		t.Error("the full set did not replace the old entry")
	}
	close(p.msgs)
	<-done
}

// TestSplitResponseHalfNeverServed checks between the parts.
func TestSplitResponseHalfNeverServed(t *testing.T) {
	c, s, _ := newTestCache(t, 10)
	p := &partsClient{signer: s, msgs: make(chan *nodev1.SyncResponse), recv: make(chan struct{})}
	c.cfg.Client = p
	mustApply(t, c, &nodev1.SyncResponse{Revision: 5, Full: true, Entries: []*typesv1.Entry{ent("old", "spiffe://example.org/old", "unix:uid:1")}})
	done := make(chan error, 1)
	go func() { _, err := c.syncOnce(t.Context()); done <- err }()
	<-p.recv
	p.msgs <- &nodev1.SyncResponse{Revision: 9, Full: true, More: true, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/a", "unix:uid:1")}}
	<-p.recv // the first part was taken in
	if n, _ := c.Stats(); n != 1 || c.Revision() != 5 {
		t.Fatalf("after the first of two parts: %d entries at revision %d, want the old 1 at 5", n, c.Revision())
	}
	// The stream ends mid-response: nothing of it applies.
	close(p.msgs)
	if err := <-done; err == nil {
		t.Fatal("syncOnce returned no error for a closed stream")
	}
	if n, _ := c.Stats(); n != 1 || c.Revision() != 5 {
		t.Fatalf("after a cut response: %d entries at revision %d, want the old 1 at 5", n, c.Revision())
	}
}

func TestPartialRefusesBadParts(t *testing.T) {
	for _, tt := range []struct {
		name   string
		second *nodev1.SyncResponse
		want   string
	}{
		{"other revision", &nodev1.SyncResponse{Revision: 8}, "is for revision 8"},
		{"full again", &nodev1.SyncResponse{Revision: 9, Full: true}, "first part"},
		{"key lists", &nodev1.SyncResponse{Revision: 9, TaintedX509KeyIds: []string{"k"}}, "first part"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p partial
			if r, err := p.add(&nodev1.SyncResponse{Revision: 9, Full: true, More: true}); r != nil || err != nil {
				t.Fatalf("first part: %v, %v", r, err)
			}
			if _, err := p.add(tt.second); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("second part: error %v, want one containing %q", err, tt.want)
			}
		})
	}
	c, _, _ := newTestCache(t, 10)
	if err := c.Apply(&nodev1.SyncResponse{Revision: 1, More: true}); err == nil {
		t.Error("Apply took a part alone")
	}
}
