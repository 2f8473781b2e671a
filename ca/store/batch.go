package store

import "context"

// MaxEntryBatch bounds the entries of one UpdateEntries or DeleteEntries
// call: each call is one transaction that holds the store's write lock
// (SQLite) or its rows' locks (PostgreSQL) until it commits.
const MaxEntryBatch = 10000

// EntryBatches changes many entries in one transaction: all of them or
// none. Like the single calls, every entry changed takes a revision of its
// own and writes an audit event in the same transaction.
type EntryBatches interface {
	// UpdateEntries replaces each entry with its ID (as UpdateEntry) and
	// returns them with their new revisions, in order. An unknown ID
	// (ErrNotFound), a stale non-zero Revision (ErrConflict), a result
	// that would duplicate another entry, stored or in the batch
	// (ErrDuplicate), a malformed entry or an ID given twice (ErrInvalid)
	// fails the whole batch with a *BatchError naming its position.
	// At most MaxEntryBatch entries.
	UpdateEntries(ctx context.Context, actor string, entries []Entry) ([]Entry, error)
	// DeleteEntries deletes every entry of ids and returns them, each
	// Revision set to the revision of its deletion. An unknown ID
	// (ErrNotFound) or one given twice (ErrInvalid) fails the whole batch
	// with a *BatchError naming its position. At most MaxEntryBatch IDs.
	DeleteEntries(ctx context.Context, actor string, ids []string) ([]Entry, error)
}
