package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/record"
)

// maxURL and maxWebRoots bound a relationship's fields.
const (
	maxURL      = 2048
	maxWebRoots = 256 << 10
)

// checkFederation validates f and returns it with its trust domain canonical.
func checkFederation(f store.FederationRelationship) (store.FederationRelationship, error) {
	td, err := record.CanonicalTD(f.TrustDomain)
	if err != nil {
		return f, err
	}
	f.TrustDomain = td
	if u, err := url.Parse(f.BundleEndpointURL); err != nil || u.Scheme != "https" || u.Host == "" || len(f.BundleEndpointURL) > maxURL {
		return f, fmt.Errorf("%w: federation %s: bundle endpoint url must be https:// and at most %d bytes", store.ErrInvalid, td, maxURL)
	}
	switch f.Profile {
	case "https_spiffe":
		id, err := spiffeid.FromString(f.EndpointSPIFFEID)
		if err != nil {
			return f, fmt.Errorf("%w: federation %s: endpoint spiffe id: %v", store.ErrInvalid, td, err)
		}
		if id.TrustDomain().Name() != td {
			return f, fmt.Errorf("%w: federation %s: endpoint spiffe id %s is not in that trust domain", store.ErrInvalid, td, id)
		}
	case "https_web":
		if f.EndpointSPIFFEID != "" {
			return f, fmt.Errorf("%w: federation %s: endpoint spiffe id is only for https_spiffe", store.ErrInvalid, td)
		}
	default:
		return f, fmt.Errorf("%w: federation %s: profile %q: want https_spiffe or https_web", store.ErrInvalid, td, f.Profile)
	}
	if len(f.WebRootsPEM) > maxWebRoots {
		return f, fmt.Errorf("%w: federation %s: web roots over %d bytes", store.ErrInvalid, td, maxWebRoots)
	}
	return f, nil
}

// CreateFederation records a federation relationship.
func (s *Store) CreateFederation(ctx context.Context, actor string, f store.FederationRelationship) (store.FederationRelationship, error) {
	if err := record.CheckActor(actor); err != nil {
		return f, fmt.Errorf("create federation %s: %w", f.TrustDomain, err)
	}
	f, err := checkFederation(f)
	if err != nil {
		return f, fmt.Errorf("create federation: %w", err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM federations`).Scan(&n); err != nil {
			return fmt.Errorf("create federation %s: %w", f.TrustDomain, err)
		}
		if n >= store.MaxFederations {
			return fmt.Errorf("create federation %s: %d relationships: %w", f.TrustDomain, n, store.ErrLimit)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO federations (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, web_roots)
			VALUES ($1, $2, $3, $4, $5)`, f.TrustDomain, f.BundleEndpointURL, f.Profile, f.EndpointSPIFFEID, nonNil(f.WebRootsPEM))
		if isUnique(err) {
			return fmt.Errorf("create federation %s: %w", f.TrustDomain, store.ErrDuplicate)
		}
		if err != nil {
			return fmt.Errorf("create federation %s: %w", f.TrustDomain, err)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{Actor: actor, Action: "federation.create", Target: f.TrustDomain,
			Details: record.Details(map[string]any{"bundle_endpoint_url": f.BundleEndpointURL, "profile": f.Profile, "endpoint_spiffe_id": f.EndpointSPIFFEID})})
		return err
	})
	if err != nil {
		return store.FederationRelationship{}, err
	}
	return f, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const federationColumns = `trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, web_roots`

func scanFederation(row scanner) (store.FederationRelationship, error) {
	var f store.FederationRelationship
	if err := row.Scan(&f.TrustDomain, &f.BundleEndpointURL, &f.Profile, &f.EndpointSPIFFEID, &f.WebRootsPEM); err != nil {
		return f, err
	}
	if len(f.WebRootsPEM) == 0 {
		f.WebRootsPEM = nil
	}
	return f, nil
}

// GetFederation returns the relationship with a trust domain.
func (s *Store) GetFederation(ctx context.Context, trustDomain string) (store.FederationRelationship, error) {
	td, err := record.CanonicalTD(trustDomain)
	if err != nil {
		return store.FederationRelationship{}, fmt.Errorf("get federation: %w", err)
	}
	f, err := scanFederation(s.r.QueryRowContext(ctx, `SELECT `+federationColumns+` FROM federations WHERE trust_domain = $1`, td))
	if errors.Is(err, sql.ErrNoRows) {
		return f, fmt.Errorf("get federation %s: %w", td, store.ErrNotFound)
	}
	if err != nil {
		return f, fmt.Errorf("get federation %s: %w", td, err)
	}
	return f, nil
}

// ListFederations returns every relationship ordered by trust domain.
func (s *Store) ListFederations(ctx context.Context) ([]store.FederationRelationship, error) {
	out, err := queryAll(ctx, s.r, scanFederation, `SELECT `+federationColumns+` FROM federations ORDER BY trust_domain`)
	if err != nil {
		return nil, fmt.Errorf("list federations: %w", err)
	}
	return out, nil
}

// DeleteFederation deletes the relationship with a trust domain. The
// trust domain's bundle stays until deleted on its own.
func (s *Store) DeleteFederation(ctx context.Context, actor string, trustDomain string) error {
	if err := record.CheckActor(actor); err != nil {
		return fmt.Errorf("delete federation %s: %w", trustDomain, err)
	}
	td, err := record.CanonicalTD(trustDomain)
	if err != nil {
		return fmt.Errorf("delete federation: %w", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM federations WHERE trust_domain = $1`, td)
		if err != nil {
			return fmt.Errorf("delete federation %s: %w", td, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("delete federation %s: %w", td, store.ErrNotFound)
		}
		_, err = s.audit(ctx, tx, store.AuditEvent{Actor: actor, Action: "federation.delete", Target: td})
		return err
	})
}
