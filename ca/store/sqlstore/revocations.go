package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

// RevokeSVID records a revoked SVID serial (see store.Revocations).
func (s *Store) RevokeSVID(ctx context.Context, actor string, r store.RevokedSVID, now time.Time, limit int) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("revoke svid: %w", err)
	}
	n, ok := new(big.Int).SetString(r.Serial, 16)
	if !ok || n.Sign() <= 0 {
		return fmt.Errorf("revoke svid: %w: serial %q is not a positive hex number", store.ErrInvalid, r.Serial)
	}
	r.Serial = n.Text(16)
	if r.NotAfter.IsZero() {
		return fmt.Errorf("revoke svid %s: %w: no notAfter", r.Serial, store.ErrInvalid)
	}
	if limit <= 0 {
		return fmt.Errorf("revoke svid %s: %w: limit must be positive", r.Serial, store.ErrInvalid)
	}
	r.NotAfter = record.Micro(r.NotAfter)
	return s.write(ctx, func(tx *sql.Tx) error {
		var count int
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM revoked_svids WHERE not_after >= $1 AND serial <> $2`, record.Micro(now), r.Serial).Scan(&count)
		if err != nil {
			return fmt.Errorf("revoke svid %s: %w", r.Serial, err)
		}
		if count >= limit {
			return fmt.Errorf("revoke svid %s: %w: %d unexpired revocations are kept already", r.Serial, store.ErrLimit, count)
		}
		r.RevokedAt = s.stamp()
		_, err = tx.ExecContext(ctx, `INSERT INTO revoked_svids (serial, spiffe_id, not_after, revoked_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (serial) DO UPDATE SET not_after = CASE WHEN excluded.not_after > revoked_svids.not_after
				THEN excluded.not_after ELSE revoked_svids.not_after END`,
			r.Serial, r.SPIFFEID, r.NotAfter, r.RevokedAt)
		if err != nil {
			return fmt.Errorf("revoke svid %s: %w", r.Serial, err)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{
			Actor:   actor,
			Action:  "svid.revoke",
			Target:  r.Serial,
			Details: record.Details(map[string]any{"spiffe_id": r.SPIFFEID, "not_after": r.NotAfter}),
		})
		return err
	})
}

// ListRevokedSVIDs returns the revocations not yet expired at now.
func (s *Store) ListRevokedSVIDs(ctx context.Context, now time.Time) ([]store.RevokedSVID, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT serial, spiffe_id, not_after, revoked_at FROM revoked_svids WHERE not_after >= $1 ORDER BY serial`, record.Micro(now))
	if err != nil {
		return nil, fmt.Errorf("list revoked svids: %w", err)
	}
	defer rows.Close()
	var out []store.RevokedSVID
	for rows.Next() {
		var r store.RevokedSVID
		if err := rows.Scan(&r.Serial, &r.SPIFFEID, timeCol{&r.NotAfter}, timeCol{&r.RevokedAt}); err != nil {
			return nil, fmt.Errorf("list revoked svids: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list revoked svids: %w", err)
	}
	return out, nil
}

// PruneRevokedSVIDs deletes the revocations that expired before now and, if
// there were any, writes one svid.prune audit event.
func (s *Store) PruneRevokedSVIDs(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{`DELETE FROM revoked_svids WHERE not_after < $1`, `DELETE FROM revoked_ids WHERE not_after < $1`} {
			res, err := tx.ExecContext(ctx, q, record.Micro(now))
			if err != nil {
				return err
			}
			m, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += m
		}
		if n == 0 {
			return nil
		}
		_, err := s.audit(ctx, tx, store.AuditEvent{Actor: "ca", Action: "svid.prune", Details: record.Details(map[string]any{"deleted": n})})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune revoked svids: %w", err)
	}
	return int(n), nil
}

// RevokeSPIFFEID records that every X.509-SVID of a SPIFFE ID issued before
// now (the store's clock) is revoked (see store.Revocations).
func (s *Store) RevokeSPIFFEID(ctx context.Context, actor string, r store.RevokedID, now time.Time, limit int) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("revoke spiffe id: %w", err)
	}
	if !strings.HasPrefix(r.SPIFFEID, "spiffe://") || len(r.SPIFFEID) > 2048 {
		return fmt.Errorf("revoke spiffe id: %w: %q is not a SPIFFE ID", store.ErrInvalid, r.SPIFFEID)
	}
	if r.NotAfter.IsZero() {
		return fmt.Errorf("revoke spiffe id %s: %w: no notAfter", r.SPIFFEID, store.ErrInvalid)
	}
	if limit <= 0 {
		return fmt.Errorf("revoke spiffe id %s: %w: limit must be positive", r.SPIFFEID, store.ErrInvalid)
	}
	r.NotAfter = record.Micro(r.NotAfter)
	return s.write(ctx, func(tx *sql.Tx) error {
		var count int
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM revoked_ids WHERE not_after >= $1 AND spiffe_id <> $2`, record.Micro(now), r.SPIFFEID).Scan(&count)
		if err != nil {
			return fmt.Errorf("revoke spiffe id %s: %w", r.SPIFFEID, err)
		}
		if count >= limit {
			return fmt.Errorf("revoke spiffe id %s: %w: %d unexpired ID revocations are kept already", r.SPIFFEID, store.ErrLimit, count)
		}
		r.RevokedAt = s.stamp()
		_, err = tx.ExecContext(ctx, `INSERT INTO revoked_ids (spiffe_id, not_after, revoked_at) VALUES ($1, $2, $3)
			ON CONFLICT (spiffe_id) DO UPDATE SET revoked_at = excluded.revoked_at,
				not_after = CASE WHEN excluded.not_after > revoked_ids.not_after THEN excluded.not_after ELSE revoked_ids.not_after END`,
			r.SPIFFEID, r.NotAfter, r.RevokedAt)
		if err != nil {
			return fmt.Errorf("revoke spiffe id %s: %w", r.SPIFFEID, err)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{
			Actor:   actor,
			Action:  "svid.revoke_id",
			Target:  r.SPIFFEID,
			Details: record.Details(map[string]any{"issued_before": r.RevokedAt, "not_after": r.NotAfter}),
		})
		return err
	})
}

// ListRevokedIDs returns the ID revocations not yet expired at now.
func (s *Store) ListRevokedIDs(ctx context.Context, now time.Time) ([]store.RevokedID, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT spiffe_id, not_after, revoked_at FROM revoked_ids WHERE not_after >= $1 ORDER BY spiffe_id`, record.Micro(now))
	if err != nil {
		return nil, fmt.Errorf("list revoked ids: %w", err)
	}
	defer rows.Close()
	var out []store.RevokedID
	for rows.Next() {
		var r store.RevokedID
		if err := rows.Scan(&r.SPIFFEID, timeCol{&r.NotAfter}, timeCol{&r.RevokedAt}); err != nil {
			return nil, fmt.Errorf("list revoked ids: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list revoked ids: %w", err)
	}
	return out, nil
}
