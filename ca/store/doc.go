// Package store defines the CA's datastore: the records it keeps and the
// interface that the sqlite and postgres backends implement, checked by one
// conformance suite (storetest).
package store
