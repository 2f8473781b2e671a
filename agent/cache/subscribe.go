package cache

import (
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/workload"
)

// subscription is one workload's view; ch holds at most the latest Update.
type subscription struct {
	c    *Cache
	sels selector.Set
	ch   chan workload.Update
}

// Subscribe follows what a workload with sels may see: the current Update
// is waiting on the channel at once; later ones follow every change the
// workload can see.
func (c *Cache) Subscribe(sels selector.Set) workload.Subscription {
	s := &subscription{c: c, sels: sels, ch: make(chan workload.Update, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subs[s] = struct{}{}
	s.deliver(c.updateLocked(sels, c.cfg.Clock.Now()))
	return s
}

func (s *subscription) Updates() <-chan workload.Update { return s.ch }

func (s *subscription) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	delete(s.c.subs, s)
}

// deliver replaces a stale, unread Update with u. Callers hold the cache
// lock, so deliveries never race each other and the send cannot block.
func (s *subscription) deliver(u workload.Update) {
	select {
	case s.ch <- u:
		return
	default:
	}
	select {
	case <-s.ch:
	default:
	}
	s.ch <- u
}

// changes collects what an edit touched, to find the subscribers that can
// see it.
type changes struct {
	all     bool // bundles changed: everyone
	entries []*entry
}

func (ch *changes) add(e *entry) { ch.entries = append(ch.entries, e) }

func (ch *changes) empty() bool { return !ch.all && len(ch.entries) == 0 }

func (ch *changes) affects(sels selector.Set) bool {
	if ch.all {
		return true
	}
	for _, e := range ch.entries {
		if sels.Superset(e.Selectors) {
			return true
		}
	}
	return false
}

func (c *Cache) notifyLocked(ch changes) {
	if ch.empty() {
		return
	}
	c.version++
	now := c.cfg.Clock.Now()
	for s := range c.subs {
		if ch.affects(s.sels) {
			s.deliver(c.updateLocked(s.sels, now))
			c.cfg.Metrics.updates.Inc()
		}
	}
}

// updateLocked builds what a workload with sels may see at now. An SVID
// outside its validity is not in it: the workload sees what a workload
// without that identity sees.
func (c *Cache) updateLocked(sels selector.Set, now time.Time) workload.Update {
	u := workload.Update{Bundle: c.bundles[c.cfg.TrustDomain], X509CRLs: c.crls}
	for id, e := range c.entries {
		if e.svid == nil || !sels.Superset(e.Selectors) || !Usable(now, e.validFrom, e.validUntil) {
			continue
		}
		svid := e.svid.mustSVID(c.cfg.Logger.Error, e.SPIFFEID)
		if svid == nil {
			continue
		}
		u.Identities = append(u.Identities, workload.Identity{EntryID: id, SVID: svid})
		for _, td := range e.FederatesWith {
			if b, ok := c.bundles[td]; ok && td != c.cfg.TrustDomain {
				if u.FederatedBundles == nil {
					u.FederatedBundles = map[spiffeid.TrustDomain]*spiffebundle.Bundle{}
				}
				u.FederatedBundles[td] = b
			}
		}
	}
	sort.Slice(u.Identities, func(i, j int) bool { return u.Identities[i].EntryID < u.Identities[j].EntryID })
	return u
}
