// Package sqlstore implements the CA datastore (store.Store) over
// database/sql, on an embedded SQLite file or on a PostgreSQL database that
// several CA replicas share.
package sqlstore
