package cache

import "time"

// Defaults for returning freed memory after bulk changes (Config).
const (
	DefaultReleaseAfter  = 1000
	DefaultReleaseEvery  = 10 * time.Second
	DefaultReleaseSettle = 3 * time.Second
	// releaseMaxDelay bounds how long changes that never pause for
	// ReleaseSettle hold a due release back.
	releaseMaxDelay = 30 * time.Second
)

// noteChurn counts n changed entries or SVIDs at now. Callers hold c.mu.
func (c *Cache) noteChurn(n int, now time.Time) {
	if n <= 0 {
		return
	}
	if c.churn == 0 {
		c.churnFirst = now
	}
	c.churn += n
	c.churnLast = now
}

// release calls cfg.ReleaseMemory once at least cfg.ReleaseAfter entries
// or SVIDs changed since the last call, the changes paused for
// cfg.ReleaseSettle (or the first of them is releaseMaxDelay old), and
// the last call (*last, owned by runMint) was at least cfg.ReleaseEvery
// ago. It returns how long until a call that is due but held back may
// happen, or 0.
//
// Why: minting or dropping thousands of SVIDs at once leaves the heap
// sized for what that pass held at its peak (responses, keys, CSRs, the
// persisted file written after it); Go returns the freed pages to the OS
// only gradually, and not below its heap goal, so the agent's resident
// set stays well above what it holds. One forced GC that returns them
// costs a few milliseconds per 10,000 SVIDs held, and happens only after
// bulk work. Waiting for the changes to settle (longer than the agent's
// 2 s persist interval) returns what the follow-up work freed too.
func (c *Cache) release(now time.Time, last *time.Time) time.Duration {
	c.mu.Lock()
	due, first, lastChange := c.churn >= c.cfg.ReleaseAfter, c.churnFirst, c.churnLast
	c.mu.Unlock()
	if !due {
		return 0
	}
	wait := max(lastChange.Add(c.cfg.ReleaseSettle).Sub(now), 0)
	wait = min(wait, max(first.Add(releaseMaxDelay).Sub(now), 0))
	if !last.IsZero() {
		wait = max(wait, last.Add(c.cfg.ReleaseEvery).Sub(now))
	}
	if wait > 0 {
		return wait
	}
	c.mu.Lock()
	c.churn = 0
	c.mu.Unlock()
	*last = now
	c.cfg.ReleaseMemory()
	return 0
}
