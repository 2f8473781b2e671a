package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

const entryColumns = `id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, federates_with, admin, downstream, revision, created_at`

// insertRows is how many rows one INSERT of CreateEntries writes: 13
// parameters a row stays far below both databases' limit on parameters
// (32766 for SQLite, 65535 for PostgreSQL).
const insertRows = 1000

// CreateEntries creates all entries or none, one revision and one
// entry.create audit event per entry, in one transaction. Rows go in
// multi-row INSERTs, so that a batch of 100,000 costs a few hundred
// statements. A failure names the entry's position (a *store.BatchError).
func (s *Store) CreateEntries(ctx context.Context, actor string, entries []store.Entry) ([]store.Entry, error) {
	if err := record.CheckActor(actor); err != nil {
		return nil, fmt.Errorf("create entries: %w", err)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	out := make([]store.Entry, len(entries))
	keys := make([]string, len(entries))
	seen := make(map[string]int, len(entries))
	for i, e := range entries {
		e, err := record.CheckEntry(e)
		if err != nil {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("create entry %d: %w", i, err)}
		}
		keys[i] = record.DupKey(e)
		if j, ok := seen[keys[i]]; ok {
			return nil, &store.BatchError{Index: i, Err: fmt.Errorf("create entry %d (%s): same spiffe id, parent id and selectors as entry %d: %w", i, e.SPIFFEID, j, store.ErrDuplicate)}
		}
		seen[keys[i]] = i
		out[i] = e
	}
	err := s.change(ctx, func(tx *sql.Tx) error {
		last, err := bump(ctx, tx, len(out))
		if err != nil {
			return err
		}
		now := s.stamp()
		for i := range out {
			e := &out[i]
			// Version 7: time-ordered, so that a batch appends to the
			// primary key and (parent_id, id) indexes instead of writing
			// to random pages of them.
			id, err := uuid.NewV7()
			if err != nil {
				return fmt.Errorf("create entries: new id: %w", err)
			}
			e.ID = id.String()
			e.Revision = last - int64(len(out)) + int64(i) + 1
			e.CreatedAt = now
		}
		st := newTxStmts(tx)
		defer st.close()
		for start := 0; start < len(out); start += insertRows {
			end := min(start+insertRows, len(out))
			if err := s.insertEntries(ctx, st, actor, out[start:end], keys[start:end], start); err != nil {
				return err
			}
		}
		return st.close()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insertEntries writes the rows and audit events of es (whose first one is
// entry number offset of the batch) with one statement each. A row that
// collides with a stored entry is skipped by the INSERT and found missing
// from what it returns, so the error names it.
//
// SQLite gets INSERT OR IGNORE rather than ON CONFLICT DO NOTHING: with
// only the uniqueness conflicts ignored the statement may still abort on
// another constraint, so SQLite keeps a statement journal (a temp file
// write of every page the statement changes, a third of a batch's CPU);
// OR IGNORE cannot abort and needs none. It also skips a row that breaks
// NOT NULL, which no row built here can; such a row would fail the batch
// as a duplicate, still all or nothing.
func (s *Store) insertEntries(ctx context.Context, st *txStmts, actor string, es []store.Entry, keys []string, offset int) error {
	const cols = 13
	var q strings.Builder
	if s.postgres {
		q.WriteString(`INSERT INTO entries (` + entryColumns + `, dup_key) VALUES `)
	} else {
		q.WriteString(`INSERT OR IGNORE INTO entries (` + entryColumns + `, dup_key) VALUES `)
	}
	args := make([]any, 0, len(es)*cols)
	for i := range es {
		e := &es[i]
		if i > 0 {
			q.WriteString(", ")
		}
		s.placeholders(&q, len(args), cols)
		args = append(args, e.ID, e.SPIFFEID, e.ParentID, record.EncodeSelectors(e.Selectors), int64(e.X509TTL), int64(e.JWTTTL),
			record.EncodeStrings(e.DNSNames), record.EncodeStrings(e.FederatesWith), e.Admin, e.Downstream,
			e.Revision, e.CreatedAt, keys[i])
	}
	if s.postgres {
		q.WriteString(` ON CONFLICT DO NOTHING`)
	}
	q.WriteString(` RETURNING id`)
	ids, err := queryAll(ctx, st, func(r scanner) (id string, err error) { return id, r.Scan(&id) }, q.String(), args...)
	if err != nil {
		return fmt.Errorf("create entries %d to %d: %w", offset, offset+len(es)-1, err)
	}
	if len(ids) != len(es) {
		written := make(map[string]bool, len(ids))
		for _, id := range ids {
			written[id] = true
		}
		for i, e := range es {
			if !written[e.ID] {
				return &store.BatchError{Index: offset + i, Err: fmt.Errorf("create entry %d (%s): an entry with the same spiffe id, parent id and selectors exists: %w", offset+i, e.SPIFFEID, store.ErrDuplicate)}
			}
		}
	}
	return s.insertEntryAudits(ctx, st, actor, "entry.create", es, offset)
}

// placeholders writes "($n+1, ..., $n+k)", or for SQLite "(?, ..., ?)":
// SQLite keeps $N and ?N in a list of named parameters that the driver
// searches once per argument, quadratic in a statement of thousands of
// them; plain ? is bound by position.
func (s *Store) placeholders(q *strings.Builder, n, k int) {
	q.WriteByte('(')
	for j := 1; j <= k; j++ {
		if j > 1 {
			q.WriteString(", ")
		}
		if !s.postgres {
			q.WriteByte('?')
			continue
		}
		q.WriteByte('$')
		q.WriteString(strconv.Itoa(n + j))
	}
	q.WriteByte(')')
}

// entryDetails is the Details of an entry's audit event. A struct, not a
// map, so that a batch does not sort keys per entry; the fields are in the
// order a map would be encoded in, so the text is the same.
type entryDetails struct {
	ParentID string `json:"parent_id"`
	Revision int64  `json:"revision"`
	SPIFFEID string `json:"spiffe_id"`
}

func entryAudit(actor, action string, e store.Entry) store.AuditEvent {
	return store.AuditEvent{
		Actor:   actor,
		Action:  action,
		Target:  e.ID,
		Details: record.Details(entryDetails{ParentID: e.ParentID, Revision: e.Revision, SPIFFEID: e.SPIFFEID}),
	}
}

// UpdateEntry replaces the entry with e.ID.
func (s *Store) UpdateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error) {
	if err := record.CheckActor(actor); err != nil {
		return store.Entry{}, fmt.Errorf("update entry %s: %w", e.ID, err)
	}
	if e.ID == "" {
		return store.Entry{}, fmt.Errorf("update entry: %w: empty id", store.ErrInvalid)
	}
	e, err := record.CheckEntry(e)
	if err != nil {
		return store.Entry{}, fmt.Errorf("update entry %s: %w", e.ID, err)
	}
	err = s.change(ctx, func(tx *sql.Tx) error {
		rev, err := bump(ctx, tx, 1)
		if err != nil {
			return err
		}
		var stored int64
		err = tx.QueryRowContext(ctx, `SELECT revision, created_at FROM entries WHERE id = $1`, e.ID).Scan(&stored, timeCol{&e.CreatedAt})
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("update entry %s: %w", e.ID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		if e.Revision != 0 && e.Revision != stored {
			return fmt.Errorf("update entry %s at revision %d: stored revision is %d: %w", e.ID, e.Revision, stored, store.ErrConflict)
		}
		e.Revision = rev
		_, err = tx.ExecContext(ctx, `UPDATE entries SET spiffe_id = $1, parent_id = $2, selectors = $3, dup_key = $4, x509_ttl = $5, jwt_ttl = $6,
			dns_names = $7, federates_with = $8, admin = $9, downstream = $10, revision = $11 WHERE id = $12`,
			e.SPIFFEID, e.ParentID, record.EncodeSelectors(e.Selectors), record.DupKey(e), int64(e.X509TTL), int64(e.JWTTTL),
			record.EncodeStrings(e.DNSNames), record.EncodeStrings(e.FederatesWith), e.Admin, e.Downstream, e.Revision, e.ID)
		if isUnique(err) {
			return fmt.Errorf("update entry %s: another entry has the same spiffe id, parent id and selectors: %w", e.ID, store.ErrDuplicate)
		}
		if err != nil {
			return fmt.Errorf("update entry %s: %w", e.ID, err)
		}
		_, err = s.audit(ctx, tx, entryAudit(actor, "entry.update", e))
		return err
	})
	if err != nil {
		return store.Entry{}, err
	}
	return e, nil
}

// DeleteEntry deletes the entry and returns it, its Revision set to the
// revision of the deletion.
func (s *Store) DeleteEntry(ctx context.Context, actor string, id string) (store.Entry, error) {
	if err := record.CheckActor(actor); err != nil {
		return store.Entry{}, fmt.Errorf("delete entry %s: %w", id, err)
	}
	var e store.Entry
	err := s.change(ctx, func(tx *sql.Tx) error {
		rev, err := bump(ctx, tx, 1)
		if err != nil {
			return err
		}
		e, err = scanEntry(tx.QueryRowContext(ctx, `SELECT `+entryColumns+` FROM entries WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delete entry %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete entry %s: %w", id, err)
		}
		e.Revision = rev
		if _, err := tx.ExecContext(ctx, `DELETE FROM entries WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete entry %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO entry_tombstones (id, revision) VALUES ($1, $2)`, id, rev); err != nil {
			return fmt.Errorf("delete entry %s: %w", id, err)
		}
		_, err = s.audit(ctx, tx, entryAudit(actor, "entry.delete", e))
		return err
	})
	if err != nil {
		return store.Entry{}, err
	}
	return e, nil
}

// GetEntry returns the entry with the ID.
func (s *Store) GetEntry(ctx context.Context, id string) (store.Entry, error) {
	e, err := scanEntry(s.r.QueryRowContext(ctx, `SELECT `+entryColumns+` FROM entries WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Entry{}, fmt.Errorf("get entry %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Entry{}, fmt.Errorf("get entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries returns the matching entries ordered by ID.
func (s *Store) ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list entries: %w: negative limit %d", store.ErrInvalid, f.Limit)
	}
	var where []string
	var args []any
	if f.ParentID != "" {
		args = append(args, f.ParentID)
		where = append(where, fmt.Sprintf("parent_id = $%d", len(args)))
	}
	if f.SPIFFEID != "" {
		args = append(args, f.SPIFFEID)
		where = append(where, fmt.Sprintf("spiffe_id = $%d", len(args)))
	}
	if f.AfterID != "" {
		args = append(args, f.AfterID)
		where = append(where, fmt.Sprintf("id > $%d", len(args)))
	}
	q := `SELECT ` + entryColumns + ` FROM entries`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY id`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	out, err := queryEntries(ctx, s.r, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	return out, nil
}

// EntriesSince returns the changes after rev, read from one snapshot.
func (s *Store) EntriesSince(ctx context.Context, rev int64) (store.EntryChanges, error) {
	if rev < 0 {
		return store.EntryChanges{}, fmt.Errorf("entries since %d: %w: negative revision", rev, store.ErrInvalid)
	}
	var ch store.EntryChanges
	// One snapshot: repeatable read in PostgreSQL, any read transaction in SQLite.
	opts := &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	err := inTx(ctx, s.r, opts, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&ch.Revision); err != nil {
			return err
		}
		var err error
		ch.Updated, err = queryEntries(ctx, tx, `SELECT `+entryColumns+` FROM entries WHERE revision > $1 ORDER BY revision`, rev)
		if err != nil || rev == 0 {
			return err
		}
		ch.Deleted, err = queryAll(ctx, tx, func(r scanner) (id string, err error) { return id, r.Scan(&id) },
			`SELECT id FROM entry_tombstones WHERE revision > $1 ORDER BY revision`, rev)
		return err
	})
	if err != nil {
		return store.EntryChanges{}, fmt.Errorf("entries since %d: %w", rev, err)
	}
	return ch, nil
}

// Revision returns the global revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.r.QueryRowContext(ctx, `SELECT value FROM revision WHERE id = 1`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return rev, nil
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func queryEntries(ctx context.Context, db querier, q string, args ...any) ([]store.Entry, error) {
	return queryAll(ctx, db, scanEntry, q, args...)
}

// queryAll runs q and scans every row with scan.
func queryAll[T any](ctx context.Context, db querier, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(dest ...any) error }

func scanEntry(row scanner) (store.Entry, error) {
	var (
		e               store.Entry
		sels, dns, fed  string
		x509TTL, jwtTTL int64
	)
	err := row.Scan(&e.ID, &e.SPIFFEID, &e.ParentID, &sels, &x509TTL, &jwtTTL, &dns, &fed, &e.Admin, &e.Downstream, &e.Revision, timeCol{&e.CreatedAt})
	if err != nil {
		return store.Entry{}, err
	}
	if e.Selectors, err = record.DecodeSelectors(sels); err != nil {
		return store.Entry{}, fmt.Errorf("entry %s: %w", e.ID, err)
	}
	if e.DNSNames, err = record.DecodeStrings(dns); err != nil {
		return store.Entry{}, fmt.Errorf("entry %s: %w", e.ID, err)
	}
	if e.FederatesWith, err = record.DecodeStrings(fed); err != nil {
		return store.Entry{}, fmt.Errorf("entry %s: %w", e.ID, err)
	}
	e.X509TTL = time.Duration(x509TTL)
	e.JWTTTL = time.Duration(jwtTTL)
	return e, nil
}
