// Package store defines the CA's datastore: the records it keeps and the
// interface that the SQL backend (sqlstore, on SQLite or PostgreSQL)
// implements, checked by one conformance suite (storetest).
package store
