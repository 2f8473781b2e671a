package nodeapi_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/nodeapi"
	"github.com/sigilhq/sigil/ca/store"
)

// countingStore counts the agent-record reads of the node API, and
// passes the store's change notifications on.
type countingStore struct {
	nodeapi.Store
	getAgent atomic.Int64
}

func (c *countingStore) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	c.getAgent.Add(1)
	return c.Store.GetAgent(ctx, id)
}

func (c *countingStore) Changed() <-chan struct{} { return c.Store.(nodeapi.Notifier).Changed() }

// A new bundle (a CA key prepared) reaches every open stream as one and
// the same response, without a store read per stream: no agent record
// read (bundles are public; the watcher's sweep ends removed agents'
// streams) and no change summary of a stream's own. Entry changes that
// follow still reach their agents, checked against the agent record.
func TestSyncBundleFanOut(t *testing.T) {
	var cs *countingStore
	e := newEnv(t, func(c *nodeapi.Config) { cs = &countingStore{Store: c.Store}; c.Store = cs })
	const n = 12
	agents := make([]*agent, n)
	streams := make([]*syncStream, n)
	var authorities int
	for i := range agents {
		agents[i] = e.joinAgent(t)
		streams[i] = e.openSync(t, agents[i], 0)
		first := streams[i].waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
		authorities = len(first.GetBundles()[0].GetX509Authorities())
	}
	agentReads := cs.getAgent.Load()
	summaries := counter(t, e, "sigil_node_sync_reads_total", "summary")
	if _, err := e.ca.Prepare(e.ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	var got []*nodev1.SyncResponse
	for i, s := range streams {
		got = append(got, s.waitFor(t, fmt.Sprintf("agent %d's new bundle", i), func(r *nodev1.SyncResponse) bool {
			return len(r.GetBundles()) > 0 && len(r.GetBundles()[0].GetX509Authorities()) > authorities
		}))
	}
	for i, r := range got[1:] {
		if !proto.Equal(r, got[0]) {
			t.Errorf("stream %d got\n%v\nstream 0 got\n%v", i+1, r, got[0])
		}
	}
	if d := cs.getAgent.Load() - agentReads; d != 0 {
		t.Errorf("%d agent record reads for a new bundle to %d streams, want none", d, n)
	}
	if d := counter(t, e, "sigil_node_sync_reads_total", "summary") - summaries; d != 0 {
		t.Errorf("%v change summaries read by streams for a new bundle, want none", d)
	}

	for i, a := range agents {
		w := e.entry(t, fmt.Sprintf("spiffe://example.org/fanout/%d", i), a.id)
		streams[i].waitFor(t, "agent's new entry", hasEntry(w.ID))
	}
	if d := cs.getAgent.Load() - agentReads; d < n {
		t.Errorf("%d agent record reads for %d streams sent entries, want one each at least", d, n)
	}
}
