// Package sqlite implements the CA datastore (store.Store) on an embedded
// SQLite database file, through the pure-Go modernc.org/sqlite driver.
package sqlite
