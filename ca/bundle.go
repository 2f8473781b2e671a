package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/bundleconv"
)

// publishBundle writes our trust domain's bundle to the store when its
// authorities changed. The X.509 authorities are the CA signing
// certificates themselves, not the upstream roots: ours that are prepared,
// active or old and unexpired, plus the unexpired ones other CA replicas
// sharing the store published, minus every key this CA revoked. Verifiers
// treat each authority as a trust anchor, so a revoked key leaving the
// bundle is what makes every verifier refuse what it signed (a chain up to
// the upstream root no longer helps: the root is not in the bundle). The
// JWT authorities are every JWT key in the journal, merged the same way.
// The sequence number grows by one on each change. Replicas race on this
// read-modify-write; each one re-publishes on every tick, so a key another
// replica overwrote is back within a tick, and a key another replica
// revoked and we wrote back is gone again at its owner's next tick.
func (c *CA) publishBundle(ctx context.Context) error {
	roots, err := c.cfg.Upstream.Roots(ctx)
	if err != nil {
		return fmt.Errorf("publish bundle: upstream roots: %w", err)
	}
	now := c.cfg.Now()
	st := c.cur.Load()
	want := store.Bundle{TrustDomain: c.cfg.TrustDomain.Name(), RefreshHint: c.cfg.RefreshHint}
	// skip holds what must not come back from the stored bundle: our own
	// keys (current ones are added below, gone ones stay gone), the
	// upstream roots (bundles before keys-as-authorities held them) and
	// every key we revoked.
	skip := map[string]bool{}
	for _, r := range roots {
		skip[keyIDForCert(r)] = true
	}
	for _, id := range st.doc.RevokedX509 {
		skip[id] = true
	}
	var authorities []*x509.Certificate
	for _, s := range st.x509 {
		skip[s.rec.ID] = true
		if now.Before(s.cert.NotAfter) {
			want.X509Authorities = append(want.X509Authorities, s.cert.Raw)
			authorities = append(authorities, s.cert)
		}
	}
	for _, s := range st.jwt {
		want.JWTAuthorities = append(want.JWTAuthorities, store.JWTAuthority{KeyID: s.rec.ID, PublicKey: s.rec.PublicKey, ExpiresAt: s.rec.NotAfter})
	}
	have, err := c.cfg.Store.GetBundle(ctx, want.TrustDomain)
	switch {
	case errors.Is(err, store.ErrNotFound):
		authorities = canonicalAuthorities(&want, authorities)
	case err != nil:
		return fmt.Errorf("publish bundle: %w", err)
	default:
		for _, der := range have.X509Authorities {
			cert, err := x509.ParseCertificate(der)
			if err != nil || skip[keyIDForCert(cert)] || !now.Before(cert.NotAfter) {
				continue
			}
			want.X509Authorities = append(want.X509Authorities, der)
			authorities = append(authorities, cert)
		}
		for _, a := range have.JWTAuthorities {
			if !c.ownsKeyID(a.KeyID) && now.Before(a.ExpiresAt) {
				want.JWTAuthorities = append(want.JWTAuthorities, a)
			}
		}
		authorities = canonicalAuthorities(&want, authorities)
		if sameAuthorities(have, want) {
			c.authorities.Store(&authorities)
			return nil
		}
		want.Sequence = have.Sequence
	}
	want.Sequence++
	if err := c.cfg.Store.SetBundle(ctx, c.id.String(), want); err != nil {
		return fmt.Errorf("publish bundle: %w", err)
	}
	c.authorities.Store(&authorities)
	c.cfg.Logger.Info("bundle published", "trust_domain", want.TrustDomain, "sequence", want.Sequence, "x509_authorities", len(want.X509Authorities), "jwt_authorities", len(want.JWTAuthorities))
	return nil
}

// X509Authorities returns the X.509 authorities of the bundle this CA last
// published: the certificates a client certificate of our trust domain
// must chain to. A revoked key is not among them.
func (c *CA) X509Authorities(context.Context) ([]*x509.Certificate, error) {
	p := c.authorities.Load()
	if p == nil || len(*p) == 0 {
		return nil, ErrNotReady
	}
	return *p, nil
}

// ownsKeyID reports whether a JWT key ID was made by this CA instance: every
// kid starts with a tag derived from the instance ID.
func (c *CA) ownsKeyID(kid string) bool {
	return strings.HasPrefix(kid, c.kidTag)
}

// Bundle returns our trust domain's current bundle from the store.
func (c *CA) Bundle(ctx context.Context) (*spiffebundle.Bundle, error) {
	b, err := c.cfg.Store.GetBundle(ctx, c.cfg.TrustDomain.Name())
	if err != nil {
		return nil, fmt.Errorf("get bundle: %w", err)
	}
	return bundleconv.FromProto(apiconv.BundleToProto(b))
}

// JWTBundle is the current set of JWT keys as go-spiffe's type.
func (c *CA) JWTBundle() (*jwtbundle.Bundle, error) {
	st := c.cur.Load()
	if st == nil {
		return nil, ErrNotReady
	}
	b := jwtbundle.New(c.cfg.TrustDomain)
	for _, s := range st.jwt {
		if err := b.AddJWTAuthority(s.rec.ID, s.public); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Roots returns the upstream roots of our trust domain: what the CA
// signing certificates chain to, and what an agent may use as bootstrap
// trust before its first sync. They are not the bundle's authorities.
// During a root rotation they are the old and the new root.
func (c *CA) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	up, err := c.cfg.Upstream.Roots(ctx)
	if err != nil {
		return nil, err
	}
	st := c.cur.Load()
	if st == nil {
		return up, nil
	}
	return allRoots(up, st.doc), nil
}

// Ready reports whether the CA can sign: it has active keys and its store
// answers.
func (c *CA) Ready(ctx context.Context) error {
	st := c.cur.Load()
	if st == nil || st.activeX509 == nil || st.activeJWT == nil {
		return ErrNotReady
	}
	if _, err := c.cfg.Store.GetBundle(ctx, c.cfg.TrustDomain.Name()); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
