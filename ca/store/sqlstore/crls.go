package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

// PutCRLs replaces caID's CRLs (see store.CRLs).
func (s *Store) PutCRLs(ctx context.Context, caID string, crls []store.SignedCRL, now time.Time) error {
	if caID == "" {
		return fmt.Errorf("put crls: %w: no ca id", store.ErrInvalid)
	}
	if len(crls) > store.MaxSignedCRLs {
		return fmt.Errorf("put crls of %s: %w: %d CRLs, at most %d", caID, store.ErrInvalid, len(crls), store.MaxSignedCRLs)
	}
	for _, c := range crls {
		if c.KeyID == "" || len(c.DER) == 0 || c.NextUpdate.IsZero() {
			return fmt.Errorf("put crls of %s: %w: a CRL without key id, DER or nextUpdate", caID, store.ErrInvalid)
		}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM signed_crls WHERE ca_id = $1 OR next_update < $2`, caID, record.Micro(now)); err != nil {
			return err
		}
		for _, c := range crls {
			if _, err := tx.ExecContext(ctx, `INSERT INTO signed_crls (ca_id, key_id, der, next_update) VALUES ($1, $2, $3, $4)`,
				caID, c.KeyID, c.DER, record.Micro(c.NextUpdate)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put crls of %s: %w", caID, err)
	}
	return nil
}

// ListCRLs returns every replica's CRLs not stale at now.
func (s *Store) ListCRLs(ctx context.Context, now time.Time) ([]store.SignedCRL, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT ca_id, key_id, der, next_update FROM signed_crls WHERE next_update > $1 ORDER BY ca_id, key_id`, record.Micro(now))
	if err != nil {
		return nil, fmt.Errorf("list crls: %w", err)
	}
	defer rows.Close()
	var out []store.SignedCRL
	for rows.Next() {
		var c store.SignedCRL
		if err := rows.Scan(&c.CAID, &c.KeyID, &c.DER, timeCol{&c.NextUpdate}); err != nil {
			return nil, fmt.Errorf("list crls: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list crls: %w", err)
	}
	return out, nil
}
