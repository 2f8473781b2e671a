package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/sigilhq/sigil/ca/store"
)

// OpenSQLite opens the SQLite database at path, creating it (mode 0600) when
// missing, and migrates its schema to the newest version this build knows. It
// refuses a database written by a newer version.
//
// Writes go through a single connection, one immediate transaction at a time,
// so concurrent writers in this process queue instead of failing with
// SQLITE_BUSY, and writers in other processes wait up to the busy timeout;
// reads use a separate read-only pool and see committed data only (WAL).
func OpenSQLite(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite store: %w: empty path", store.ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	ms, err := loadMigrations("sqlite")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
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

	w, err := sql.Open("sqlite", sqliteDSN(abs, "_txlock=immediate", "_journal_mode=WAL", "_synchronous=NORMAL", "_pragma=cache_size(-65536)"))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	// BEGIN IMMEDIATE takes the write lock: no migration lock is needed.
	if err := migrate(ctx, w, ms, ""); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", abs, err)
	}
	r, err := sql.Open("sqlite", sqliteDSN(abs, "_query_only=1"))
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
	return newStore(w, r, opts), nil
}

func sqliteDSN(abs string, params ...string) string {
	params = append(params, "_busy_timeout=10000", "_foreign_keys=1", "_time_integer_format=unix_micro")
	u := url.URL{Scheme: "file", Path: abs, RawQuery: strings.Join(params, "&")}
	return u.String()
}
