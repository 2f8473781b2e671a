package agent

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/internal/clock"
)

// failover moves the agent between CA replicas. A call or stream that ends
// because the replica is unreachable or failing reports the connection's
// generation on failed; the first report for the connection in use starts
// a move to the next replica after a backoff with jitter (growing while no
// replica answers, reset by the first success), so that a fleet of agents
// does not stampede the surviving replica and a dead fleet of replicas is
// not hammered.
type failover struct {
	failed chan uint64 // buffer 1: a failure on the connection of this generation
	ok     chan uint64 // buffer 1: a success after a failure
	// degradedSince is when the current outage began (UnixNano), 0 when
	// the connection in use works.
	degradedSince atomic.Int64
}

func newFailover() *failover {
	return &failover{failed: make(chan uint64, 1), ok: make(chan uint64, 1)}
}

func (f *failover) onFailed(gen uint64) {
	select {
	case f.failed <- gen:
	default:
	}
}

func (f *failover) onOK(gen uint64) {
	if f.degradedSince.Load() == 0 {
		return // the common case: nothing to report
	}
	select {
	case f.ok <- gen:
	default:
	}
}

// runFailover acts on the reports of failover until ctx ends.
func (a *Agent) runFailover(ctx context.Context) error {
	f := a.failover
	attempt := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case gen := <-f.ok:
			c := a.conn.current()
			if c == nil || c.gen != gen {
				continue
			}
			if since := f.degradedSince.Swap(0); since != 0 {
				a.cfg.Logger.Info("connected to the CA replica", "server", c.addr,
					"outage", a.cfg.Clock.Now().Sub(time.Unix(0, since)).Round(time.Millisecond), "failovers", attempt)
			}
			attempt = 0
		case gen := <-f.failed:
			c := a.conn.current()
			if c == nil || c.gen != gen {
				continue // a report about a connection already replaced
			}
			now := a.cfg.Clock.Now()
			f.degradedSince.CompareAndSwap(0, now.UnixNano())
			if a.servers.count() < 2 && len(a.servers.configured) < 2 {
				// One address: gRPC reconnects to it by itself.
				continue
			}
			d := cache.Backoff(attempt, a.cfg.RetryMin, a.cfg.RetryMax, a.cfg.Rand())
			attempt++
			a.cfg.Logger.Warn("the CA replica is unreachable or failing: moving to the next one", "server", c.addr, "move_in", d, "attempt", attempt)
			if !clock.Sleep(ctx, a.cfg.Clock, d) {
				return nil
			}
			if c := a.conn.current(); c == nil || c.gen != gen {
				continue // replaced meanwhile (a renewed SVID): report again if it fails
			}
			if err := a.reconnect(ctx, a.servers.next(ctx)); err != nil {
				a.cfg.Logger.Error("cannot connect to the next CA replica", "error", err)
				continue
			}
			a.metrics.failovers.Inc()
			a.cache.Reconnect()
		}
	}
}

// reconnect moves node API calls to a new connection to addr that presents
// the agent's current SVID.
func (a *Agent) reconnect(ctx context.Context, addr string) error {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	cc, err := a.dial(addr, true)
	if err != nil {
		return err
	}
	a.conn.swap(cc, addr)
	a.cfg.Logger.Info("talking to the CA replica", "server", addr)
	return nil
}
