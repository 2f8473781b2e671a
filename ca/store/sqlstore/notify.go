package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sigilhq/sigil/internal/clock"
)

// notifyChannel is the PostgreSQL channel every committed change of
// entries or bundles is announced on; the payload is the global
// revision after the change.
const notifyChannel = "sigil_changes"

// listenAppName names the LISTEN connection in pg_stat_activity.
const listenAppName = "sigil-listen"

// Reconnect backoff of Listen.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
)

// changes wakes watchers: wake closes the current channel and makes a new
// one, so it never blocks and several changes coalesce into one wake-up.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func newChanges() *changes { return &changes{ch: make(chan struct{})} }

func (c *changes) current() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

func (c *changes) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.ch)
	c.ch = make(chan struct{})
}

// Changed returns a channel that is closed at the next committed change of
// entries or bundles: made through this Store, or, with PostgreSQL
// while Listen runs, through any Store on the same database. Take the
// channel before reading the store and wait on it after: a change committed
// after the read always closes it. Changes made while Listen was
// disconnected close it once Listen is back, so a watcher that then reads
// the store from its last revision catches up.
func (s *Store) Changed() <-chan struct{} { return s.changes.current() }

// WithListenClock sets the clock Listen waits on between reconnects
// (default the wall clock).
func WithListenClock(c clock.Clock) Option {
	return func(s *Store) { s.clock = c }
}

// WithLogger sets where Listen reports a lost connection (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) { s.log = l }
}

// change runs fn in a write transaction like write and announces the
// change when it commits: to this process's watchers at once, and with
// PostgreSQL to every replica's Listen through NOTIFY, which PostgreSQL
// delivers only on commit.
func (s *Store) change(ctx context.Context, fn func(tx *sql.Tx) error) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		if !s.postgres {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, (SELECT value FROM revision WHERE id = 1)::text)`, notifyChannel); err != nil {
			return fmt.Errorf("notify replicas: %w", err)
		}
		return nil
	})
	if err == nil {
		s.changes.wake()
	}
	return err
}

// Listen relays the changes other replicas announce to Changed until ctx
// ends. It holds one PostgreSQL connection of its own; when it is lost it
// reconnects with a backoff and, once listening again, wakes the watchers
// so that they read what changed while it was away. With SQLite, where all
// writers of a database that serves watchers are in this process, it only
// waits for ctx.
func (s *Store) Listen(ctx context.Context) error {
	if s.listenCfg == nil {
		<-ctx.Done()
		return nil
	}
	retry := listenRetryMin
	var lastErr string
	for {
		err := s.listenOnce(ctx, func() {
			retry = listenRetryMin
			if lastErr != "" {
				s.log.InfoContext(ctx, "store: listening for changes again")
				lastErr = ""
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if msg := err.Error(); msg != lastErr {
			s.log.ErrorContext(ctx, "store: listen for changes of other replicas", "error", err, "retry_in", retry)
			lastErr = msg
		}
		if !clock.Sleep(ctx, s.clock, retry) {
			return nil
		}
		retry = min(2*retry, listenRetryMax)
	}
}

// listenOnce connects, listens, wakes the watchers (whatever changed
// before LISTEN took effect is read by them now; what changes after is
// notified) and relays notifications until the connection fails.
func (s *Store) listenOnce(ctx context.Context, listening func()) error {
	cfg := s.listenCfg.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = listenAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	listening()
	s.changes.wake()
	for {
		// The payload (the revision) is not trusted: the watchers read
		// the store from their own last revision.
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		s.changes.wake()
	}
}
