package cache

import "time"

// Defaults for returning freed memory after bulk changes (Config).
const (
	DefaultReleaseAfter = 1000
	DefaultReleaseEvery = 10 * time.Second
)

// release calls cfg.ReleaseMemory when at least cfg.ReleaseAfter entries
// or SVIDs changed since the last call and that call was at least
// cfg.ReleaseEvery ago (last, owned by runMint). It returns how long until
// a call that is due but held back by the interval may happen, or 0.
//
// Why: minting or dropping thousands of SVIDs at once leaves the heap
// sized for what that pass held at its peak (responses, keys, CSRs); Go
// returns the freed pages to the OS only gradually, so for minutes the
// agent's resident set stays well above what it holds. One forced GC that
// returns them costs a few milliseconds per 10,000 SVIDs held, and happens
// only after bulk work.
func (c *Cache) release(now time.Time, last *time.Time) time.Duration {
	c.mu.Lock()
	due := c.churn >= c.cfg.ReleaseAfter
	c.mu.Unlock()
	if !due {
		return 0
	}
	if wait := last.Add(c.cfg.ReleaseEvery).Sub(now); !last.IsZero() && wait > 0 {
		return wait
	}
	c.mu.Lock()
	c.churn = 0
	c.mu.Unlock()
	*last = now
	c.cfg.ReleaseMemory()
	return 0
}
