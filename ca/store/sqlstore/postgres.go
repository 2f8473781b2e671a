package sqlstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sigilhq/sigil/ca/store"
)

// migrationLock is the advisory lock key held while migrating, so that CA
// replicas starting together migrate one after the other ("SIGL").
const migrationLock = 0x5349474c

// OpenPostgres connects to the PostgreSQL database at dsn (a postgres:// URL
// or key=value string; pool_max_conns and the other pool_* settings of
// pgxpool.ParseConfig size the connection pool) and migrates its schema to
// the newest version this build knows. It refuses a database written by a
// newer version.
func OpenPostgres(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: do not repeat it.
		return nil, fmt.Errorf("open postgres store: %w: cannot parse the connection string", store.ErrInvalid)
	}
	ms, err := loadMigrations("postgres")
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	lock := fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, migrationLock)
	if err := migrate(ctx, db, ms, lock); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres store %s/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Database, err)
	}
	s := newStore(db, db, opts)
	s.postgres = true
	s.listenCfg = cfg.ConnConfig.Copy()
	return s, nil
}
