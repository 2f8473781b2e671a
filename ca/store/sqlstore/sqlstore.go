package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
	"github.com/sigilhq/sigil/internal/clock"
)

var _ store.Store = (*Store)(nil)

// migrations holds one directory of numbered schema changes per database.
//
//go:embed migrations/*/*.sql
var migrations embed.FS

// Store is a store.Store in a SQL database. Every query is written once, with
// $N placeholders, which both drivers bind by position. Times are kept at
// microsecond precision in UTC: a timestamptz in PostgreSQL, unix
// microseconds in SQLite (the driver's _time_integer_format=unix_micro).
//
// Every entry change first bumps the global revision counter, whose row lock
// (PostgreSQL) or the database write lock (SQLite) it holds until commit, so
// entry writers commit in revision order.
type Store struct {
	w   *sql.DB // writes
	r   *sql.DB // reads; w itself for PostgreSQL
	now func() time.Time

	postgres  bool // else SQLite
	changes   *changes
	listenCfg *pgx.ConnConfig // PostgreSQL only: what Listen connects to
	clock     clock.Clock
	log       *slog.Logger
}

// Option configures OpenSQLite and OpenPostgres.
type Option func(*Store)

// WithClock sets the clock that stamps CreatedAt, UpdatedAt and audit
// times (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

func newStore(w, r *sql.DB, opts []Option) *Store {
	s := &Store{w: w, r: r, now: time.Now, changes: newChanges(), clock: clock.Real{}, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Close closes the database.
func (s *Store) Close() error {
	if s.r == s.w {
		return s.w.Close()
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the migrations of one database ("sqlite", "postgres").
func loadMigrations(db string) ([]migration, error) {
	files, err := fs.Glob(migrations, "migrations/"+db+"/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, f := range files {
		base := path.Base(f)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number", base)
		}
		b, err := migrations.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d", m.name, i+1)
		}
	}
	return out, nil
}

// migrate brings the schema of db up to date in one transaction. lock, when
// not empty, runs first so that processes starting together migrate one
// after the other.
func migrate(ctx context.Context, db *sql.DB, ms []migration, lock string) error {
	return inTx(ctx, db, nil, func(tx *sql.Tx) error {
		if lock != "" {
			if _, err := tx.ExecContext(ctx, lock); err != nil {
				return fmt.Errorf("take migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if cur > len(ms) {
			return fmt.Errorf("database schema version %d is newer than this build of sigil supports (%d): upgrade sigil", cur, len(ms))
		}
		for _, m := range ms[cur:] {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
		}
		if cur == len(ms) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, len(ms)); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		return nil
	})
}

// inTx runs fn in a transaction and commits it if fn succeeds.
func inTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return inTx(ctx, s.w, nil, fn)
}

// stamp is the store's current time as kept.
func (s *Store) stamp() time.Time { return record.Micro(s.now()) }

// bump adds n to the global revision and returns the new value.
func bump(ctx context.Context, tx *sql.Tx, n int) (int64, error) {
	var rev int64
	err := tx.QueryRowContext(ctx, `UPDATE revision SET value = value + $1 WHERE id = 1 RETURNING value`, n).Scan(&rev)
	if err != nil {
		return 0, fmt.Errorf("bump revision: %w", err)
	}
	return rev, nil
}

// audit writes one audit event inside tx.
func (s *Store) audit(ctx context.Context, tx *sql.Tx, ev store.AuditEvent) (store.AuditEvent, error) {
	ev, err := record.CheckAudit(ev, s.stamp())
	if err != nil {
		return ev, err
	}
	err = tx.QueryRowContext(ctx,
		`INSERT INTO audit (time, actor, action, target, details) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		ev.Time, ev.Actor, ev.Action, ev.Target, ev.Details).Scan(&ev.ID)
	if err != nil {
		return ev, fmt.Errorf("write audit event %s: %w", ev.Action, err)
	}
	return ev, nil
}

// isUnique reports whether err is a unique or primary key violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// timeCol scans a time column: unix microseconds (SQLite) or a timestamptz
// (PostgreSQL), kept as record.Micro.
type timeCol struct{ t *time.Time }

func (c timeCol) Scan(v any) error {
	switch v := v.(type) {
	case int64:
		*c.t = time.UnixMicro(v).UTC()
	case time.Time:
		*c.t = record.Micro(v)
	default:
		return fmt.Errorf("time column holds %T", v)
	}
	return nil
}
