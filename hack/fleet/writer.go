package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// writer writes entries through the admin API and keeps what each agent
// should hold.
type writer struct {
	f      *fleet
	admin  adminv1.AdminClient
	agents []*simAgent
	rng    *rand.Rand

	mu       sync.Mutex
	seq      int
	byParent map[string]int // agent ID -> index
	expected map[int]int    // agent index -> entries it should hold
	live     []liveEntry
	writes   int
}

type liveEntry struct {
	id, spiffeID string
	agent        int
}

func (w *writer) entry(agent int) *typesv1.Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	e := &typesv1.Entry{
		SpiffeId:  fmt.Sprintf("spiffe://%s/fleet/w/%d", w.f.td.Name(), w.seq),
		ParentId:  w.agents[agent].id.String(),
		Selectors: []string{fmt.Sprintf("unix:uid:%d", 1000+w.seq%60000)},
	}
	if w.f.cfg.SVIDTTL > 0 {
		e.X509Ttl = durationpb.New(w.f.cfg.SVIDTTL)
	}
	return e
}

// create writes batch; with track, each entry's arrival at its agent is
// timed from now.
func (w *writer) create(ctx context.Context, batch []*typesv1.Entry, track bool) error {
	if track {
		now := time.Now()
		for _, e := range batch {
			w.f.expect(e.GetSpiffeId(), now)
		}
	}
	resp, err := w.admin.CreateEntries(ctx, &adminv1.CreateEntriesRequest{Entries: batch})
	if err != nil {
		for _, e := range batch {
			w.f.unexpect(e.GetSpiffeId())
		}
		return fmt.Errorf("create %d entries: %w", len(batch), err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byParent == nil {
		w.byParent = map[string]int{}
		for i, a := range w.agents {
			w.byParent[a.id.String()] = i
		}
		w.expected = map[int]int{}
	}
	for _, e := range resp.GetEntries() {
		i := w.byParent[e.GetParentId()]
		w.expected[i]++
		w.live = append(w.live, liveEntry{id: e.GetId(), spiffeID: e.GetSpiffeId(), agent: i})
	}
	w.writes += len(batch)
	return nil
}

func (w *writer) deleteOne(ctx context.Context) error {
	w.mu.Lock()
	if len(w.live) == 0 {
		w.mu.Unlock()
		return nil
	}
	k := w.rng.IntN(len(w.live))
	e := w.live[k]
	w.live[k] = w.live[len(w.live)-1]
	w.live = w.live[:len(w.live)-1]
	w.expected[e.agent]--
	w.writes++
	w.mu.Unlock()
	// Created and deleted before the agent synced: it may see neither.
	unseen := w.f.unexpect(e.spiffeID)
	if !unseen {
		w.f.expectDelete(e.id, w.agents[e.agent], time.Now())
	}
	if _, err := w.admin.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: e.id}); err != nil {
		w.f.unexpect("deleted:" + e.id)
		w.f.mu.Lock()
		delete(w.f.delOwner, e.id)
		w.f.mu.Unlock()
		w.mu.Lock()
		w.live = append(w.live, e)
		w.expected[e.agent]++
		w.mu.Unlock()
		return fmt.Errorf("delete entry: %w", err)
	}
	return nil
}

// churn creates and deletes entries, alternating, at rate writes per
// second (as close as one writer gets) until ctx ends.
func (w *writer) churn(ctx context.Context, rate int) error {
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	// A write under way when ctx ends completes, so that what the
	// writer expects is what the store holds.
	wctx := context.WithoutCancel(ctx)
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var err error
		if n%2 == 0 {
			err = w.create(wctx, []*typesv1.Entry{w.entry(w.rng.IntN(len(w.agents)))}, true)
		} else {
			err = w.deleteOne(wctx)
		}
		if err != nil {
			w.f.countErr(wctx, "churn", err)
		}
	}
}

// rotate prepares a new X.509 CA key after wait and activates it a little
// later, as `sigil ca prepare` and `sigil ca activate` do.
func (w *writer) rotate(ctx context.Context, wait time.Duration, logf func(string, ...any)) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(wait):
	}
	w.f.mu.Lock()
	w.f.rotStart = time.Now()
	w.f.mu.Unlock()
	if _, err := w.admin.PrepareCA(ctx, &adminv1.PrepareCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509}); err != nil {
		w.f.countErr(ctx, "rotate", err)
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(min(wait/2, 5*time.Second)):
	}
	if _, err := w.admin.ActivateCA(ctx, &adminv1.ActivateCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509}); err != nil {
		w.f.countErr(ctx, "rotate", err)
		return nil
	}
	w.f.mu.Lock()
	w.f.activated = time.Now()
	w.f.mu.Unlock()
	logf("rotated the X.509 CA key (prepared, then activated)")
	return nil
}

// waitConsistent waits until every agent holds as many entries, and SVIDs,
// as the writer expects.
func (w *writer) waitConsistent(ctx context.Context, timeout time.Duration) error {
	return w.wait(ctx, timeout, func() string {
		if n := w.inconsistent(false); n > 0 {
			return fmt.Sprintf("%d of %d agents do not hold their entries and SVIDs", n, len(w.agents))
		}
		return ""
	})
}

// waitSettled waits until every change written has been seen by its agent
// and every agent holds exactly the entries the writer expects, and an
// SVID for each.
func (w *writer) waitSettled(ctx context.Context, timeout time.Duration) error {
	return w.wait(ctx, timeout, func() string {
		n, awaited := w.inconsistent(true), w.f.awaited()
		if n == 0 && awaited == 0 {
			return ""
		}
		return fmt.Sprintf("%d of %d agents do not hold their entries and SVIDs, %d changes not seen", n, len(w.agents), awaited)
	})
}

// wait polls unmet until it returns "" or timeout passes.
func (w *writer) wait(ctx context.Context, timeout time.Duration, unmet func() string) error {
	deadline := time.Now().Add(timeout)
	for {
		why := unmet()
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s after %s%s", why, timeout, w.f.errSummary())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// inconsistent counts the agents that hold another number of entries or
// SVIDs than the writer expects; with exact, also those whose entry IDs
// differ from the expected ones (a missed create and a missed deletion
// leave the count right).
func (w *writer) inconsistent(exact bool) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var want []map[string]bool
	if exact {
		want = make([]map[string]bool, len(w.agents))
		for i := range want {
			want[i] = map[string]bool{}
		}
		for _, e := range w.live {
			want[e.agent][e.id] = true
		}
	}
	n := 0
	for i, a := range w.agents {
		if a.cache == nil {
			n++
			continue
		}
		entries, svids := a.cache.Stats()
		if entries != w.expected[i] || svids != w.expected[i] {
			n++
			continue
		}
		if exact {
			for _, e := range a.cache.Snapshot().Entries {
				if !want[i][e.ID] {
					n++
					break
				}
			}
		}
	}
	return n
}

func (f *fleet) errSummary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.firstErr) == 0 {
		return ""
	}
	return " (first errors: " + strings.Join(f.firstErr, "; ") + ")"
}

func (w *writer) written() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes
}
