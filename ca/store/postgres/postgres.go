package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

var _ store.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key held while migrating, so that CA
// replicas starting together migrate one after the other ("SIGL").
const migrationLock = 0x5349474c

// Store is a store.Store in a PostgreSQL database. Every entry change takes
// the row lock of the global revision counter first, so entry writers from
// all replicas commit in revision order.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// Option configures Open.
type Option func(*Store)

// WithClock sets the clock that stamps CreatedAt, UpdatedAt and audit
// times (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string, see pgxpool.ParseConfig) and migrates its schema to the newest
// version this build knows. It refuses a database written by a newer version.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: do not repeat it.
		return nil, fmt.Errorf("open postgres store: %w: cannot parse the connection string", store.ErrInvalid)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := &Store{pool: pool, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

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

// migrate brings the schema up to date in one transaction, holding an
// advisory lock so that concurrent replicas do not race.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var cur int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if cur > len(ms) {
			return fmt.Errorf("database schema version %d is newer than this build of sigil supports (%d): upgrade sigil", cur, len(ms))
		}
		for _, m := range ms[cur:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
		}
		if cur == len(ms) {
			return nil
		}
		if _, err := tx.Exec(ctx, `DELETE FROM schema_version`); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, len(ms)); err != nil {
			return fmt.Errorf("record schema version: %w", err)
		}
		return nil
	})
}

func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// stamp is the store's current time as kept.
func (s *Store) stamp() time.Time { return record.Micro(s.now()) }

// bump adds n to the global revision and returns the new value. It holds
// the counter's row lock until the transaction ends.
func bump(ctx context.Context, tx pgx.Tx, n int) (int64, error) {
	var rev int64
	if err := tx.QueryRow(ctx, `UPDATE revision SET value = value + $1 WHERE id = 1 RETURNING value`, n).Scan(&rev); err != nil {
		return 0, fmt.Errorf("bump revision: %w", err)
	}
	return rev, nil
}

// audit writes one audit event inside tx.
func (s *Store) audit(ctx context.Context, tx pgx.Tx, ev store.AuditEvent) (store.AuditEvent, error) {
	ev, err := record.CheckAudit(ev, s.stamp())
	if err != nil {
		return ev, err
	}
	err = tx.QueryRow(ctx,
		`INSERT INTO audit (time, actor, action, target, details) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		ev.Time, ev.Actor, ev.Action, ev.Target, ev.Details).Scan(&ev.ID)
	if err != nil {
		return ev, fmt.Errorf("write audit event %s: %w", ev.Action, err)
	}
	return ev, nil
}

// isUnique reports whether err is a unique violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func utc(t time.Time) time.Time { return record.Micro(t) }
