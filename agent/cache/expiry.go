package cache

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/sigilhq/sigil/internal/clock"
)

// Validity is the window in which every certificate of chain is valid: the
// latest NotBefore and the earliest NotAfter.
func Validity(chain []*x509.Certificate) (from, until time.Time) {
	for i, c := range chain {
		if i == 0 || c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	return from, until
}

// Usable reports whether an SVID valid over [from, until] may be handed
// out at now. It is withheld before from and from until on: at its
// NotAfter it has no life left to use.
func Usable(now, from, until time.Time) bool {
	return !now.Before(from) && now.Before(until)
}

// runExpiry takes each SVID out of the Updates the moment it expires (and
// puts a not-yet-valid one in the moment it becomes valid), waiting on the
// clock for the next such instant; a new SVID wakes it to look again.
func (c *Cache) runExpiry(ctx context.Context) {
	for {
		now := c.cfg.Clock.Now()
		next := c.checkValidity(now)
		var (
			t    clock.Timer
			fire <-chan time.Time
		)
		if !next.IsZero() {
			t = c.cfg.Clock.NewTimer(next.Sub(now))
			fire = t.C()
		}
		select {
		case <-ctx.Done():
		case <-fire:
		case <-c.expWake:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (c *Cache) pokeExpiry() {
	select {
	case c.expWake <- struct{}{}:
	default:
	}
}

// checkValidity tells the subscribers of every SVID that became unusable
// (or usable) since the last look, and returns the next instant at which
// one will (zero: none).
func (c *Cache) checkValidity(now time.Time) (next time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var (
		ch             changes
		expired, early int
		newlyExpired   int
		sample         string
	)
	for _, e := range c.entries {
		if e.svid == nil {
			continue
		}
		ok := Usable(now, e.validFrom, e.validUntil)
		switch {
		case now.Before(e.validFrom):
			early++
			next = earliest(next, e.validFrom)
		case ok:
			next = earliest(next, e.validUntil)
		default:
			expired++
		}
		if ok == e.usable {
			continue
		}
		e.usable = ok
		ch.add(e)
		if !ok && !now.Before(e.validUntil) {
			newlyExpired++
			sample = e.SPIFFEID.String()
		}
	}
	c.cfg.Metrics.withheld.WithLabelValues("expired").Set(float64(expired))
	c.cfg.Metrics.withheld.WithLabelValues("not_yet_valid").Set(float64(early))
	if newlyExpired > 0 {
		c.cfg.Metrics.expirations.Add(float64(newlyExpired))
		c.cfg.Logger.Error("X509-SVIDs expired before the CA renewed them: withheld from workloads until it does",
			"count", newlyExpired, "spiffe_id", sample)
	}
	c.notifyLocked(ch)
	return next
}

// Withheld counts the SVIDs held but not handed out at the clock's now:
// expired ones (the CA has not renewed them in time) and not yet valid ones.
func (c *Cache) Withheld() (expired, early int) {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		switch {
		case e.svid == nil:
		case now.Before(e.validFrom):
			early++
		case !now.Before(e.validUntil):
			expired++
		}
	}
	return expired, early
}
