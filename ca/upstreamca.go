package ca

import (
	"context"
	"crypto"
	"crypto/x509"

	"github.com/sigilhq/sigil/ca/upstream"
)

// upstreamWithSigner is an upstream that needs the new key itself, not
// only its public half: step-ca signs a CSR, which the key must sign.
type upstreamWithSigner interface {
	SignCAWithSigner(ctx context.Context, tmpl *x509.Certificate, signer crypto.Signer) ([]*x509.Certificate, error)
}

// upstreamHealth is an upstream reached over the network, whose outages
// operators must see.
type upstreamHealth interface {
	Health() upstream.Health
}

// signCA has the upstream sign a signing certificate for signer's key.
func (c *CA) signCA(ctx context.Context, tmpl *x509.Certificate, signer crypto.Signer) ([]*x509.Certificate, error) {
	if u, ok := c.cfg.Upstream.(upstreamWithSigner); ok {
		return u.SignCAWithSigner(ctx, tmpl, signer)
	}
	return c.cfg.Upstream.SignCA(ctx, tmpl, signer.Public())
}

// signCAUnder has the upstream sign under root (a root rotation's new
// root, before it is active); nil root: as signCA.
func (c *CA) signCAUnder(ctx context.Context, root *x509.Certificate, tmpl *x509.Certificate, signer crypto.Signer) ([]*x509.Certificate, error) {
	if root == nil {
		return c.signCA(ctx, tmpl, signer)
	}
	rr, ok := c.cfg.Upstream.(RootRotator)
	if !ok {
		return nil, ErrRootRotationUnsupported
	}
	return rr.SignCAUnder(ctx, root, tmpl, signer.Public())
}

// upstreamStatus is the upstream's health, if it has one to report.
func (c *CA) upstreamStatus() *upstream.Health {
	u, ok := c.cfg.Upstream.(upstreamHealth)
	if !ok {
		return nil
	}
	h := u.Health()
	return &h
}
