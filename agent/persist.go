package agent

import (
	"context"
	"errors"
	"time"

	"github.com/sigilhq/sigil/agent/svidstore"
)

// persistEvery is how often the agent writes its workloads' SVIDs when
// they changed.
const persistEvery = 2 * time.Second

// restoreWorkloads loads the workloads' entries and SVIDs the agent kept
// before a restart, so it serves them before it reaches the CA. Only an
// agent that resumed its persisted identity uses them; one that attested
// anew (perhaps as another agent ID) removes them. A file that cannot be
// used is logged and ignored: the agent mints new SVIDs from the CA.
func (a *Agent) restoreWorkloads() {
	a.mu.Lock()
	resumed := a.resumed
	a.mu.Unlock()
	log := a.cfg.Logger
	if !resumed {
		if err := svidstore.RemoveWorkloads(a.cfg.SVIDDir); err != nil {
			log.Error("cannot remove the workload SVIDs of the previous identity", "error", err)
		}
		return
	}
	snap, err := svidstore.LoadWorkloads(a.cfg.SVIDDir, a.cfg.TrustDomain)
	switch {
	case errors.Is(err, svidstore.ErrNotFound):
		return
	case err != nil:
		log.Error("not using the persisted workload SVIDs", "error", err)
		return
	}
	kept, dropped, err := a.cache.Restore(snap)
	if err != nil {
		log.Error("not using the persisted workload SVIDs", "error", err)
		return
	}
	log.Info("serving persisted workload SVIDs until the CA is reached", "entries", len(snap.Entries), "svids", kept, "dropped_expired_or_untrusted", dropped)
}

// runPersist writes the workloads' entries and SVIDs whenever they changed,
// checking every persistEvery, and once more when ctx ends.
func (a *Agent) runPersist(ctx context.Context) error {
	var saved uint64
	save := func() {
		v := a.cache.Version()
		if v == saved {
			return
		}
		if err := svidstore.SaveWorkloads(a.cfg.SVIDDir, a.cache.Snapshot()); err != nil {
			a.cfg.Logger.Error("cannot persist workload SVIDs", "error", err)
			return
		}
		saved = v
	}
	for {
		t := a.cfg.Clock.NewTimer(persistEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			save()
			return nil
		case <-t.C():
			save()
		}
	}
}
