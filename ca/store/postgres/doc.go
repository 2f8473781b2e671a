// Package postgres implements the CA datastore (store.Store) on PostgreSQL,
// so that several CA replicas can share one database.
package postgres
