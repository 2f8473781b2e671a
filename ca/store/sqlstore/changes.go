package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/sigilhq/sigil/ca/store"
)

// checkPage refuses a page limit outside 1 to store.MaxChangePage.
func checkPage(limit int) error {
	if limit < 1 || limit > store.MaxChangePage {
		return fmt.Errorf("%w: limit %d outside 1 to %d", store.ErrInvalid, limit, store.MaxChangePage)
	}
	return nil
}

// ChangeSummary returns the IDs and current parents of the entries created
// or updated after revision after and the IDs of those deleted after it,
// read from one snapshot; with more than limit of them, none and Overflow.
// It reads two columns of the changed rows and stops after limit+1 of
// them, so a bulk write of 100,000 entries costs a bounded read.
func (s *Store) ChangeSummary(ctx context.Context, after int64, limit int) (store.ChangeSummary, error) {
	if after < 0 {
		return store.ChangeSummary{}, fmt.Errorf("change summary after %d: %w: negative revision", after, store.ErrInvalid)
	}
	if err := checkPage(limit); err != nil {
		return store.ChangeSummary{}, fmt.Errorf("change summary after %d: %w", after, err)
	}
	sum := store.ChangeSummary{After: after}
	opts := &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	err := inTx(ctx, s.r, opts, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&sum.Revision); err != nil {
			return err
		}
		if sum.Revision <= after {
			return nil
		}
		ref := func(r scanner) (e store.EntryRef, err error) { return e, r.Scan(&e.ID, &e.ParentID) }
		updated, err := queryAll(ctx, tx, ref,
			`SELECT id, parent_id FROM entries WHERE revision > $1 AND revision <= $2 LIMIT $3`, after, sum.Revision, limit+1)
		if err != nil {
			return err
		}
		if len(updated) > limit {
			sum.Overflow = true
			return nil
		}
		deleted, err := queryAll(ctx, tx, func(r scanner) (e store.EntryRef, err error) { return e, r.Scan(&e.ID) },
			`SELECT id FROM entry_tombstones WHERE revision > $1 AND revision <= $2 LIMIT $3`, after, sum.Revision, limit+1-len(updated))
		if err != nil {
			return err
		}
		if len(updated)+len(deleted) > limit {
			sum.Overflow = true
			return nil
		}
		sum.Changed = append(updated, deleted...)
		return nil
	})
	if err != nil {
		return store.ChangeSummary{}, fmt.Errorf("change summary after %d: %w", after, err)
	}
	return sum, nil
}

// ChangedEntries returns the entries under one of parents whose revision
// is in (after, upTo], ordered by revision, at most limit of them. It reads
// only the parents' changed rows (index on parent_id, revision).
func (s *Store) ChangedEntries(ctx context.Context, parents []string, after, upTo int64, limit int) ([]store.Entry, error) {
	if err := checkPage(limit); err != nil {
		return nil, fmt.Errorf("changed entries: %w", err)
	}
	if len(parents) == 0 || len(parents) > store.MaxChangedParents {
		return nil, fmt.Errorf("changed entries: %w: %d parents, want 1 to %d", store.ErrInvalid, len(parents), store.MaxChangedParents)
	}
	if after < 0 || upTo < after {
		return nil, fmt.Errorf("changed entries: %w: revisions (%d, %d]", store.ErrInvalid, after, upTo)
	}
	var q strings.Builder
	q.WriteString(`SELECT ` + entryColumns + ` FROM entries WHERE parent_id IN `)
	args := make([]any, 0, len(parents)+3)
	s.placeholders(&q, 0, len(parents))
	for _, p := range parents {
		args = append(args, p)
	}
	// Plain ? for SQLite throughout: placeholders binds the list by position.
	param := func(v any) string {
		args = append(args, v)
		if !s.postgres {
			return "?"
		}
		return fmt.Sprintf("$%d", len(args))
	}
	q.WriteString(` AND revision > ` + param(after) + ` AND revision <= ` + param(upTo) + ` ORDER BY revision LIMIT ` + param(limit))
	out, err := queryEntries(ctx, s.r, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("changed entries: %w", err)
	}
	return out, nil
}
