package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

// batchRows is how many rows one statement of UpdateEntries or
// DeleteEntries reads or writes: at 12 parameters a row it stays far below
// both databases' limit on parameters, like insertRows.
const batchRows = 1000

// UpdateEntries replaces all entries or none in one transaction: a few
// statements per thousand entries (read the stored revisions, check
// duplicates, one multi-row UPDATE, one multi-row audit INSERT) instead of
// a transaction per entry.
func (s *Store) UpdateEntries(ctx context.Context, actor string, entries []store.Entry) ([]store.Entry, error) {
	if err := record.CheckActor(actor); err != nil {
		return nil, fmt.Errorf("update entries: %w", err)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	if len(entries) > store.MaxEntryBatch {
		return nil, fmt.Errorf("update entries: %w: %d entries, at most %d a call", store.ErrInvalid, len(entries), store.MaxEntryBatch)
	}
	out := make([]store.Entry, len(entries))
	keys := make([]string, len(entries))
	byID := make(map[string]int, len(entries))
	byKey := make(map[string]int, len(entries))
	for i, e := range entries {
		if e.ID == "" {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d: %w: empty id", i, store.ErrInvalid)}
		}
		if j, ok := byID[e.ID]; ok {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d (%s): %w: same id as entry %d", i, e.ID, store.ErrInvalid, j)}
		}
		byID[e.ID] = i
		e, err := record.CheckEntry(e)
		if err != nil {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d (%s): %w", i, entries[i].ID, err)}
		}
		keys[i] = record.DupKey(e)
		if j, ok := byKey[keys[i]]; ok {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d (%s): same spiffe id, parent id and selectors as entry %d: %w", i, e.ID, j, store.ErrDuplicate)}
		}
		byKey[keys[i]] = i
		out[i] = e
	}
	err := s.change(ctx, func(tx *sql.Tx) error {
		last, err := bump(ctx, tx, len(out))
		if err != nil {
			return err
		}
		ids := make([]string, len(out))
		for i := range out {
			ids[i] = out[i].ID
		}
		stored, err := s.storedRows(ctx, tx, ids)
		if err != nil {
			return fmt.Errorf("update entries: %w", err)
		}
		for i := range out {
			e := &out[i]
			row, ok := stored[e.ID]
			if !ok {
				return &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d (%s): %w", i, e.ID, store.ErrNotFound)}
			}
			if e.Revision != 0 && e.Revision != row.revision {
				return &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d (%s) at revision %d: stored revision is %d: %w", i, e.ID, e.Revision, row.revision, store.ErrConflict)}
			}
			e.Revision = last - int64(len(out)) + int64(i) + 1
			e.CreatedAt = row.createdAt
		}
		// A new key held by an entry outside the batch is a duplicate;
		// one held by an entry of the batch (a swap) is moved out of the
		// way first, since both databases check uniqueness row by row.
		holders, err := s.keyHolders(ctx, tx, keys)
		if err != nil {
			return fmt.Errorf("update entries: %w", err)
		}
		var moving []string
		for i, k := range keys {
			h, ok := holders[k]
			if !ok || h == out[i].ID {
				continue
			}
			if _, inBatch := byID[h]; !inBatch {
				return &store.BatchError{Index: i, Err: fmt.Errorf("update entry %d (%s): another entry has the same spiffe id, parent id and selectors: %w", i, out[i].ID, store.ErrDuplicate)}
			}
			moving = append(moving, h)
		}
		for start := 0; start < len(moving); start += batchRows {
			chunk := moving[start:min(start+batchRows, len(moving))]
			// dup_key is a hex digest: "moving:<id>" can collide with none.
			q, args := s.inList(`UPDATE entries SET dup_key = 'moving:' || id WHERE id IN `, chunk)
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("update entries: %w", err)
			}
		}
		st := newTxStmts(tx)
		defer st.close()
		for start := 0; start < len(out); start += batchRows {
			end := min(start+batchRows, len(out))
			if err := s.updateRows(ctx, tx, out[start:end], keys[start:end], start); err != nil {
				return err
			}
			if err := s.insertEntryAudits(ctx, st, actor, "entry.update", out[start:end], start); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// updateRows writes es, whose first one is entry number offset of the
// batch, with one UPDATE that joins the entries table with a VALUES list.
func (s *Store) updateRows(ctx context.Context, tx *sql.Tx, es []store.Entry, keys []string, offset int) error {
	// Column types, for PostgreSQL, which infers text for an untyped
	// parameter in a VALUES list.
	types := []string{"text", "text", "text", "text", "text", "bigint", "bigint", "text", "text", "boolean", "boolean", "bigint"}
	var q strings.Builder
	q.WriteString(`WITH v (id, spiffe_id, parent_id, selectors, dup_key, x509_ttl, jwt_ttl, dns_names, federates_with, admin, downstream, revision) AS (VALUES `)
	args := make([]any, 0, len(es)*len(types))
	for i := range es {
		e := &es[i]
		if i > 0 {
			q.WriteString(", ")
		}
		s.typedPlaceholders(&q, len(args), types)
		args = append(args, e.ID, e.SPIFFEID, e.ParentID, record.EncodeSelectors(e.Selectors), keys[i], int64(e.X509TTL), int64(e.JWTTTL),
			record.EncodeStrings(e.DNSNames), record.EncodeStrings(e.FederatesWith), e.Admin, e.Downstream, e.Revision)
	}
	q.WriteString(`) UPDATE entries SET spiffe_id = v.spiffe_id, parent_id = v.parent_id, selectors = v.selectors, dup_key = v.dup_key,
		x509_ttl = v.x509_ttl, jwt_ttl = v.jwt_ttl, dns_names = v.dns_names, federates_with = v.federates_with,
		admin = v.admin, downstream = v.downstream, revision = v.revision FROM v WHERE entries.id = v.id`)
	res, err := tx.ExecContext(ctx, q.String(), args...)
	if isUnique(err) {
		// Checked above; only a concurrent writer (PostgreSQL) gets here.
		return fmt.Errorf("update entries %d to %d: an entry with the same spiffe id, parent id and selectors appeared: %w", offset, offset+len(es)-1, store.ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("update entries %d to %d: %w", offset, offset+len(es)-1, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(es)) {
		return fmt.Errorf("update entries %d to %d: %d rows updated (%v), want %d", offset, offset+len(es)-1, n, err, len(es))
	}
	return nil
}

// DeleteEntries deletes all entries or none in one transaction, a few
// statements per thousand entries.
func (s *Store) DeleteEntries(ctx context.Context, actor string, ids []string) ([]store.Entry, error) {
	if err := record.CheckActor(actor); err != nil {
		return nil, fmt.Errorf("delete entries: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > store.MaxEntryBatch {
		return nil, fmt.Errorf("delete entries: %w: %d ids, at most %d a call", store.ErrInvalid, len(ids), store.MaxEntryBatch)
	}
	seen := make(map[string]int, len(ids))
	for i, id := range ids {
		if id == "" {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("delete entry %d: %w: empty id", i, store.ErrInvalid)}
		}
		if j, ok := seen[id]; ok {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("delete entry %d (%s): %w: same id as entry %d", i, id, store.ErrInvalid, j)}
		}
		seen[id] = i
	}
	out := make([]store.Entry, len(ids))
	err := s.change(ctx, func(tx *sql.Tx) error {
		last, err := bump(ctx, tx, len(ids))
		if err != nil {
			return err
		}
		found := make(map[string]store.Entry, len(ids))
		for start := 0; start < len(ids); start += batchRows {
			q, args := s.inList(`SELECT `+entryColumns+` FROM entries WHERE id IN `, ids[start:min(start+batchRows, len(ids))])
			es, err := queryEntries(ctx, tx, q, args...)
			if err != nil {
				return fmt.Errorf("delete entries: %w", err)
			}
			for _, e := range es {
				found[e.ID] = e
			}
		}
		for i, id := range ids {
			e, ok := found[id]
			if !ok {
				return &store.BatchError{Index: i, Err: fmt.Errorf("delete entry %d (%s): %w", i, id, store.ErrNotFound)}
			}
			e.Revision = last - int64(len(ids)) + int64(i) + 1
			out[i] = e
		}
		st := newTxStmts(tx)
		defer st.close()
		for start := 0; start < len(ids); start += batchRows {
			end := min(start+batchRows, len(ids))
			q, args := s.inList(`DELETE FROM entries WHERE id IN `, ids[start:end])
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("delete entries %d to %d: %w", start, end-1, err)
			}
			var t strings.Builder
			t.WriteString(`INSERT INTO entry_tombstones (id, revision) VALUES `)
			args = args[:0]
			for i, e := range out[start:end] {
				if i > 0 {
					t.WriteString(", ")
				}
				s.placeholders(&t, len(args), 2)
				args = append(args, e.ID, e.Revision)
			}
			if _, err := tx.ExecContext(ctx, t.String(), args...); err != nil {
				return fmt.Errorf("delete entries %d to %d: tombstones: %w", start, end-1, err)
			}
			if err := s.insertEntryAudits(ctx, st, actor, "entry.delete", out[start:end], start); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// storedRevision is what UpdateEntries reads of a stored entry.
type storedRevision struct {
	id        string
	revision  int64
	createdAt time.Time
}

// storedRows reads the revision and creation time of the entries with ids.
func (s *Store) storedRows(ctx context.Context, tx *sql.Tx, ids []string) (map[string]storedRevision, error) {
	out := make(map[string]storedRevision, len(ids))
	for start := 0; start < len(ids); start += batchRows {
		q, args := s.inList(`SELECT id, revision, created_at FROM entries WHERE id IN `, ids[start:min(start+batchRows, len(ids))])
		rows, err := queryAll(ctx, tx, func(r scanner) (row storedRevision, err error) {
			return row, r.Scan(&row.id, &row.revision, timeCol{&row.createdAt})
		}, q, args...)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r.id] = r
		}
	}
	return out, nil
}

// keyHolders returns, for each of keys that a stored entry holds, that
// entry's ID.
func (s *Store) keyHolders(ctx context.Context, tx *sql.Tx, keys []string) (map[string]string, error) {
	out := map[string]string{}
	type holder struct{ key, id string }
	for start := 0; start < len(keys); start += batchRows {
		q, args := s.inList(`SELECT dup_key, id FROM entries WHERE dup_key IN `, keys[start:min(start+batchRows, len(keys))])
		rows, err := queryAll(ctx, tx, func(r scanner) (h holder, err error) { return h, r.Scan(&h.key, &h.id) }, q, args...)
		if err != nil {
			return nil, err
		}
		for _, h := range rows {
			out[h.key] = h.id
		}
	}
	return out, nil
}

// inList appends "(p1, ..., pn)" for vals to prefix.
func (s *Store) inList(prefix string, vals []string) (string, []any) {
	var q strings.Builder
	q.WriteString(prefix)
	s.placeholders(&q, 0, len(vals))
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return q.String(), args
}

// typedPlaceholders is placeholders with a cast to each type for
// PostgreSQL ("($1::text, $2::bigint)"); SQLite gets plain "(?, ?)".
func (s *Store) typedPlaceholders(q *strings.Builder, n int, types []string) {
	if !s.postgres {
		s.placeholders(q, n, len(types))
		return
	}
	q.WriteByte('(')
	for j, t := range types {
		if j > 0 {
			q.WriteString(", ")
		}
		fmt.Fprintf(q, "$%d::%s", n+j+1, t)
	}
	q.WriteByte(')')
}

// insertEntryAudits writes one audit event (action) per entry of es, whose
// first one is entry number offset of the batch, with one INSERT.
//
// The events are built here, not checked by record.CheckAudit: every
// caller has checked actor, action is a constant and Details are encoded
// from a struct, so re-parsing each event's JSON would only cost time.
func (s *Store) insertEntryAudits(ctx context.Context, st *txStmts, actor, action string, es []store.Entry, offset int) error {
	const auditCols = 5
	if action == "" {
		return fmt.Errorf("%w: audit event: empty action", store.ErrInvalid)
	}
	now := s.stamp()
	var q strings.Builder
	q.WriteString(`INSERT INTO audit (time, actor, action, target, details) VALUES `)
	args := make([]any, 0, len(es)*auditCols)
	for i, e := range es {
		ev := entryAudit(actor, action, e)
		if i > 0 {
			q.WriteString(", ")
		}
		s.placeholders(&q, len(args), auditCols)
		args = append(args, now, ev.Actor, ev.Action, ev.Target, ev.Details)
	}
	if err := st.exec(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("write audit events of entries %d to %d: %w", offset, offset+len(es)-1, err)
	}
	return nil
}
