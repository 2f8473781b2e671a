package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

var _ store.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store kept in one SQLite database file. Writes go through
// a single connection, one immediate transaction at a time, so concurrent
// writers in this process queue instead of failing with SQLITE_BUSY; reads
// use a separate pool and see committed data only (WAL).
type Store struct {
	w   *sql.DB // one connection, BEGIN IMMEDIATE
	r   *sql.DB // read-only pool
	now func() time.Time
}

// Option configures Open.
type Option func(*Store)

// WithClock sets the clock that stamps CreatedAt, UpdatedAt and audit
// times (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// Open opens the database at path, creating it (mode 0600) when missing,
// and migrates its schema to the newest version this build knows. It
// refuses a database written by a newer version.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite store: %w: empty path", store.ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	// Create the file ourselves so that it is never readable by others;
	// SQLite gives the -wal and -shm files the database file's mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open sqlite store: %w", err)
	}

	s := &Store{now: time.Now}
	for _, o := range opts {
		o(s)
	}
	w, err := sql.Open("sqlite", dsn(abs, "_txlock=immediate", "_journal_mode=WAL", "_synchronous=NORMAL"))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	r, err := sql.Open("sqlite", dsn(abs, "_query_only=1"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	r.SetMaxOpenConns(4)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	s.w, s.r = w, r
	return s, nil
}

func dsn(abs string, params ...string) string {
	params = append(params, "_busy_timeout=10000", "_foreign_keys=1")
	u := url.URL{Scheme: "file", Path: abs, RawQuery: strings.Join(params, "&")}
	return u.String()
}

// Close closes the database.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, f := range files {
		base := filepath.Base(f)
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

// migrate brings the schema up to date in one transaction.
func migrate(ctx context.Context, db *sql.DB) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return inTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, len(ms)); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		return nil
	})
}

// inTx runs fn in a transaction and commits it if fn succeeds.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
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
	return inTx(ctx, s.w, fn)
}

// stamp is the store's current time as kept.
func (s *Store) stamp() time.Time { return record.Micro(s.now()) }

// bump adds n to the global revision and returns the new value.
func bump(ctx context.Context, tx *sql.Tx, n int) (int64, error) {
	var rev int64
	err := tx.QueryRowContext(ctx, `UPDATE revision SET value = value + ? WHERE id = 1 RETURNING value`, n).Scan(&rev)
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
		`INSERT INTO audit (time, actor, action, target, details) VALUES (?, ?, ?, ?, ?) RETURNING id`,
		ev.Time.UnixMicro(), ev.Actor, ev.Action, ev.Target, ev.Details).Scan(&ev.ID)
	if err != nil {
		return ev, fmt.Errorf("write audit event %s: %w", ev.Action, err)
	}
	return ev, nil
}

// isUnique reports whether err is a unique or primary key violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func fromMicro(v int64) time.Time { return time.UnixMicro(v).UTC() }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
