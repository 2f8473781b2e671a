package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

// CreateAgent records a newly attested agent.
func (s *Store) CreateAgent(ctx context.Context, actor string, a store.Agent) (store.Agent, error) {
	if err := record.CheckActor(actor); err != nil {
		return store.Agent{}, fmt.Errorf("create agent %s: %w", a.ID, err)
	}
	a, err := record.CheckAgent(a)
	if err != nil {
		return store.Agent{}, fmt.Errorf("create agent: %w", err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		a.CreatedAt = s.stamp()
		a.UpdatedAt = a.CreatedAt
		_, err := tx.ExecContext(ctx, `INSERT INTO agents (id, attestation_type, serial, expires_at, selectors, banned, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			a.ID, a.AttestationType, a.Serial, record.Micro(a.ExpiresAt), record.EncodeSelectors(a.Selectors), a.Banned,
			a.CreatedAt, a.UpdatedAt)
		if isUnique(err) {
			return fmt.Errorf("create agent %s: %w", a.ID, store.ErrDuplicate)
		}
		if err != nil {
			return fmt.Errorf("create agent %s: %w", a.ID, err)
		}
		_, err = s.audit(ctx, tx, agentAudit(actor, "agent.create", a))
		return err
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

func agentAudit(actor, action string, a store.Agent) store.AuditEvent {
	return store.AuditEvent{
		Actor:  actor,
		Action: action,
		Target: a.ID,
		Details: record.Details(map[string]any{
			"attestation_type": a.AttestationType,
			"serial":           a.Serial,
			"banned":           a.Banned,
		}),
	}
}

// UpdateAgent replaces the agent with a.ID (a ban is an update with Banned set).
func (s *Store) UpdateAgent(ctx context.Context, actor string, a store.Agent) (store.Agent, error) {
	if err := record.CheckActor(actor); err != nil {
		return store.Agent{}, fmt.Errorf("update agent %s: %w", a.ID, err)
	}
	a, err := record.CheckAgent(a)
	if err != nil {
		return store.Agent{}, fmt.Errorf("update agent: %w", err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT created_at FROM agents WHERE id = $1`, a.ID).Scan(timeCol{&a.CreatedAt})
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("update agent %s: %w", a.ID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("update agent %s: %w", a.ID, err)
		}
		a.UpdatedAt = s.stamp()
		_, err = tx.ExecContext(ctx, `UPDATE agents SET attestation_type = $1, serial = $2, expires_at = $3, selectors = $4, banned = $5, updated_at = $6
			WHERE id = $7`,
			a.AttestationType, a.Serial, record.Micro(a.ExpiresAt), record.EncodeSelectors(a.Selectors), a.Banned, a.UpdatedAt, a.ID)
		if err != nil {
			return fmt.Errorf("update agent %s: %w", a.ID, err)
		}
		_, err = s.audit(ctx, tx, agentAudit(actor, "agent.update", a))
		return err
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// DeleteAgent evicts the agent.
func (s *Store) DeleteAgent(ctx context.Context, actor string, id string) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("evict agent %s: %w", id, err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("evict agent %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("evict agent %s: %w", id, store.ErrNotFound)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{Actor: actor, Action: "agent.evict", Target: id})
		return err
	})
}

const agentColumns = `id, attestation_type, serial, expires_at, selectors, banned, created_at, updated_at`

// GetAgent returns the agent with the ID.
func (s *Store) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	a, err := scanAgent(s.r.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns the agents after f.AfterID ordered by ID, at most
// f.Limit of them (0: all).
func (s *Store) ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list agents: %w: negative limit %d", store.ErrInvalid, f.Limit)
	}
	q := `SELECT ` + agentColumns + ` FROM agents WHERE id > $1 ORDER BY id`
	args := []any{f.AfterID}
	if f.Limit > 0 {
		q += ` LIMIT $2`
		args = append(args, f.Limit)
	}
	out, err := queryAll(ctx, s.r, scanAgent, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

func scanAgent(row scanner) (store.Agent, error) {
	var (
		a    store.Agent
		sels string
	)
	if err := row.Scan(&a.ID, &a.AttestationType, &a.Serial, timeCol{&a.ExpiresAt}, &sels, &a.Banned, timeCol{&a.CreatedAt}, timeCol{&a.UpdatedAt}); err != nil {
		return store.Agent{}, err
	}
	var err error
	if a.Selectors, err = record.DecodeSelectors(sels); err != nil {
		return store.Agent{}, fmt.Errorf("agent %s: %w", a.ID, err)
	}
	return a, nil
}

// CreateJoinToken records a join token. The store keeps only its SHA-256.
func (s *Store) CreateJoinToken(ctx context.Context, actor string, t store.JoinToken) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("create join token: %w", err)
	}
	if t.Token == "" {
		return fmt.Errorf("create join token: %w: empty token", store.ErrInvalid)
	}
	if t.ExpiresAt.IsZero() {
		return fmt.Errorf("create join token: %w: no expiry", store.ErrInvalid)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO join_tokens (token_hash, expires_at, spiffe_id) VALUES ($1, $2, $3)`, record.TokenHash(t.Token), record.Micro(t.ExpiresAt), t.SPIFFEID)
		if isUnique(err) {
			return fmt.Errorf("create join token: %w", store.ErrDuplicate)
		}
		if err != nil {
			return fmt.Errorf("create join token: %w", err)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{
			Actor:   actor,
			Action:  "token.create",
			Target:  record.TokenTarget(t.Token),
			Details: record.Details(map[string]any{"expires_at": record.Micro(t.ExpiresAt), "spiffe_id": t.SPIFFEID}),
		})
		return err
	})
}

// ConsumeJoinToken deletes the token and returns it.
func (s *Store) ConsumeJoinToken(ctx context.Context, token string, now time.Time) (store.JoinToken, error) {
	// Compare at the precision the store keeps.
	now = record.Micro(now)
	var expires time.Time
	var spiffeID string
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `DELETE FROM join_tokens WHERE token_hash = $1 RETURNING expires_at, spiffe_id`, record.TokenHash(token)).Scan(timeCol{&expires}, &spiffeID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("consume join token: %w", store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("consume join token: %w", err)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{
			Actor:   "ca",
			Action:  "token.consume",
			Target:  record.TokenTarget(token),
			Details: record.Details(map[string]any{"expired": now.After(expires)}),
		})
		return err
	})
	if err != nil {
		return store.JoinToken{}, err
	}
	if now.After(expires) {
		return store.JoinToken{}, fmt.Errorf("consume join token: expired at %s: %w", expires.Format(time.RFC3339), store.ErrExpired)
	}
	return store.JoinToken{Token: token, ExpiresAt: expires, SPIFFEID: spiffeID}, nil
}

// PruneJoinTokens deletes the tokens that expired before now and, if there
// were any, writes one token.prune audit event.
func (s *Store) PruneJoinTokens(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM join_tokens WHERE expires_at < $1`, record.Micro(now))
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{Actor: "ca", Action: "token.prune", Details: record.Details(map[string]any{"deleted": n})})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune join tokens: %w", err)
	}
	return int(n), nil
}

// SetBundle creates or replaces a bundle.
func (s *Store) SetBundle(ctx context.Context, actor string, b store.Bundle) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("set bundle %s: %w", b.TrustDomain, err)
	}
	b, err := record.CheckBundle(b)
	if err != nil {
		return fmt.Errorf("set bundle: %w", err)
	}
	return s.change(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO bundles (trust_domain, x509_authorities, jwt_authorities, refresh_hint, sequence)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (trust_domain) DO UPDATE SET x509_authorities = excluded.x509_authorities,
				jwt_authorities = excluded.jwt_authorities, refresh_hint = excluded.refresh_hint, sequence = excluded.sequence`,
			b.TrustDomain, record.EncodeX509Authorities(b.X509Authorities), record.EncodeJWTAuthorities(b.JWTAuthorities), int64(b.RefreshHint), int64(b.Sequence))
		if err != nil {
			return fmt.Errorf("set bundle %s: %w", b.TrustDomain, err)
		}
		_, err = s.audit(ctx, tx, bundleAudit(actor, b))
		return err
	})
}

func bundleAudit(actor string, b store.Bundle) store.AuditEvent {
	kids := make([]string, len(b.JWTAuthorities))
	for i, a := range b.JWTAuthorities {
		kids[i] = a.KeyID
	}
	return store.AuditEvent{
		Actor:  actor,
		Action: "bundle.set",
		Target: b.TrustDomain,
		Details: record.Details(map[string]any{
			"sequence":         b.Sequence,
			"x509_authorities": len(b.X509Authorities),
			"jwt_key_ids":      kids,
		}),
	}
}

const bundleColumns = `trust_domain, x509_authorities, jwt_authorities, refresh_hint, sequence`

// GetBundle returns the bundle of the trust domain.
func (s *Store) GetBundle(ctx context.Context, trustDomain string) (store.Bundle, error) {
	td, err := record.CanonicalTD(trustDomain)
	if err != nil {
		return store.Bundle{}, fmt.Errorf("get bundle: %w", err)
	}
	b, err := scanBundle(s.r.QueryRowContext(ctx, `SELECT `+bundleColumns+` FROM bundles WHERE trust_domain = $1`, td))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Bundle{}, fmt.Errorf("get bundle %s: %w", td, store.ErrNotFound)
	}
	if err != nil {
		return store.Bundle{}, fmt.Errorf("get bundle %s: %w", td, err)
	}
	return b, nil
}

// ListBundles returns every bundle ordered by trust domain.
func (s *Store) ListBundles(ctx context.Context) ([]store.Bundle, error) {
	out, err := queryAll(ctx, s.r, scanBundle, `SELECT `+bundleColumns+` FROM bundles ORDER BY trust_domain`)
	if err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	return out, nil
}

func scanBundle(row scanner) (store.Bundle, error) {
	var (
		b         store.Bundle
		x509, jwt string
		hint, seq int64
	)
	if err := row.Scan(&b.TrustDomain, &x509, &jwt, &hint, &seq); err != nil {
		return store.Bundle{}, err
	}
	var err error
	if b.X509Authorities, err = record.DecodeX509Authorities(x509); err != nil {
		return store.Bundle{}, fmt.Errorf("bundle %s: %w", b.TrustDomain, err)
	}
	if b.JWTAuthorities, err = record.DecodeJWTAuthorities(jwt); err != nil {
		return store.Bundle{}, fmt.Errorf("bundle %s: %w", b.TrustDomain, err)
	}
	b.RefreshHint = time.Duration(hint)
	b.Sequence = uint64(seq)
	return b, nil
}

// DeleteBundle deletes the bundle of the trust domain.
func (s *Store) DeleteBundle(ctx context.Context, actor string, trustDomain string) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("delete bundle %s: %w", trustDomain, err)
	}
	td, err := record.CanonicalTD(trustDomain)
	if err != nil {
		return fmt.Errorf("delete bundle: %w", err)
	}
	return s.change(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM bundles WHERE trust_domain = $1`, td)
		if err != nil {
			return fmt.Errorf("delete bundle %s: %w", td, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("delete bundle %s: %w", td, store.ErrNotFound)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{Actor: actor, Action: "bundle.delete", Target: td})
		return err
	})
}

// SaveJournal creates or replaces the key journal of a CA instance.
func (s *Store) SaveJournal(ctx context.Context, caID string, doc []byte) error {
	if caID == "" {
		return fmt.Errorf("save journal: %w: empty ca id", store.ErrInvalid)
	}
	if doc == nil {
		doc = []byte{}
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO journals (ca_id, doc, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (ca_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at`,
		caID, doc, s.stamp())
	if err != nil {
		return fmt.Errorf("save journal %s: %w", caID, err)
	}
	return nil
}

// LoadJournal returns the key journal of a CA instance.
func (s *Store) LoadJournal(ctx context.Context, caID string) ([]byte, error) {
	var doc []byte
	err := s.r.QueryRowContext(ctx, `SELECT doc FROM journals WHERE ca_id = $1`, caID).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("load journal %s: %w", caID, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load journal %s: %w", caID, err)
	}
	if doc == nil {
		doc = []byte{}
	}
	return doc, nil
}

// AppendAudit writes one audit event; a zero Time is set to now.
func (s *Store) AppendAudit(ctx context.Context, ev store.AuditEvent) (store.AuditEvent, error) {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		ev, err = s.audit(ctx, tx, ev)
		return err
	})
	if err != nil {
		return store.AuditEvent{}, fmt.Errorf("append audit event: %w", err)
	}
	return ev, nil
}

// ListAudit pages through the audit trail in ID order.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("list audit: %w: negative limit %d", store.ErrInvalid, f.Limit)
	}
	q := `SELECT id, time, actor, action, target, details FROM audit WHERE id > $1 ORDER BY id`
	args := []any{f.AfterID}
	if f.Limit > 0 {
		q += ` LIMIT $2`
		args = append(args, f.Limit)
	}
	out, err := queryAll(ctx, s.r, scanAudit, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

func scanAudit(row scanner) (ev store.AuditEvent, err error) {
	return ev, row.Scan(&ev.ID, timeCol{&ev.Time}, &ev.Actor, &ev.Action, &ev.Target, &ev.Details)
}
