package sqlstore

import (
	"context"
	"database/sql"
	"errors"
)

// txStmts prepares each distinct statement of a batch once within its
// transaction: the multi-row INSERTs of a large batch repeat the same text
// (insertRows rows each) for every chunk but the last, and SQLite spends
// as long preparing one of thousands of parameters as PostgreSQL parsing it.
// At most maxTxStmts statements are kept; later ones run unprepared.
type txStmts struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

// maxTxStmts bounds the statements one txStmts holds open.
const maxTxStmts = 8

func newTxStmts(tx *sql.Tx) *txStmts {
	return &txStmts{tx: tx, stmts: map[string]*sql.Stmt{}}
}

// QueryContext runs q with args through the statement prepared for q.
func (t *txStmts) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := t.prepare(ctx, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return t.tx.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// exec is query for a statement that returns no rows.
func (t *txStmts) exec(ctx context.Context, q string, args ...any) error {
	st, err := t.prepare(ctx, q)
	if err != nil {
		return err
	}
	if st == nil {
		_, err = t.tx.ExecContext(ctx, q, args...)
		return err
	}
	_, err = st.ExecContext(ctx, args...)
	return err
}

func (t *txStmts) prepare(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	if len(t.stmts) >= maxTxStmts {
		return nil, nil
	}
	st, err := t.tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	t.stmts[q] = st
	return st, nil
}

// close closes every prepared statement; the transaction's end would too,
// but a long transaction should not hold them past their use.
func (t *txStmts) close() error {
	var errs []error
	for q, st := range t.stmts {
		errs = append(errs, st.Close())
		delete(t.stmts, q)
	}
	return errors.Join(errs...)
}
