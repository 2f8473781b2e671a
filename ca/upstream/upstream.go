package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Upstream signs the CA's signing certificates.
type Upstream interface {
	// SignCA signs tmpl (a CA certificate template the caller filled:
	// subject, URIs, name constraints, validity, key usage) for pub and
	// returns the chain from the new certificate up to, but excluding, the
	// root. NotAfter is clamped to the issuer's NotAfter.
	SignCA(ctx context.Context, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error)
	// Roots returns the trust anchors for the bundle.
	Roots(ctx context.Context) ([]*x509.Certificate, error)
}

// issuer is a CA certificate and key that sign under a set of roots. It is
// immutable once built, so it is safe for concurrent use.
type issuer struct {
	cert   *x509.Certificate
	signer crypto.Signer
	// chain is what SignCA appends after the new certificate: the issuer
	// and its intermediates, without any root. It is empty when the issuer
	// is itself a root.
	chain []*x509.Certificate
	roots []*x509.Certificate
	now   func() time.Time
}

func (is *issuer) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range is.roots {
		p.AddCert(r)
	}
	return p
}

func (is *issuer) intermediatePool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range is.chain {
		p.AddCert(c)
	}
	return p
}

// notAfterLimit is the earliest NotAfter on the way from the issuer to
// (excluding) the roots: nothing signed may outlive it.
func (is *issuer) notAfterLimit() time.Time {
	limit := is.cert.NotAfter
	for _, c := range is.chain {
		if c.NotAfter.Before(limit) {
			limit = c.NotAfter
		}
	}
	return limit
}

func (is *issuer) rootsCopy() []*x509.Certificate {
	return append([]*x509.Certificate(nil), is.roots...)
}

// signCA builds the certificate from tmpl, signs it, and checks that the
// result verifies to the roots before handing it out.
func (is *issuer) signCA(tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	switch {
	case tmpl == nil:
		return nil, errors.New("sign ca: nil template")
	case pub == nil:
		return nil, errors.New("sign ca: nil public key")
	case !tmpl.IsCA:
		return nil, errors.New("sign ca: template is not a CA certificate (IsCA is false)")
	case tmpl.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, errors.New("sign ca: template key usage lacks certSign")
	case tmpl.NotAfter.IsZero():
		return nil, errors.New("sign ca: template has no NotAfter")
	}
	t := *tmpl
	t.BasicConstraintsValid = true
	now := is.now()
	if t.NotBefore.IsZero() {
		t.NotBefore = now
	}
	if limit := is.notAfterLimit(); t.NotAfter.After(limit) {
		t.NotAfter = limit
	}
	if !t.NotAfter.After(t.NotBefore) {
		return nil, fmt.Errorf("sign ca: issuer %q is valid until %s, which leaves nothing after the requested NotBefore %s",
			is.cert.Subject, is.cert.NotAfter.UTC().Format(time.RFC3339), t.NotBefore.UTC().Format(time.RFC3339))
	}
	if t.SerialNumber == nil {
		sn, err := serialNumber()
		if err != nil {
			return nil, fmt.Errorf("sign ca: %w", err)
		}
		t.SerialNumber = sn
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, is.cert, pub, is.signer)
	if err != nil {
		return nil, fmt.Errorf("sign ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sign ca: parse the signed certificate: %w", err)
	}
	// Check at now, or at the start of a certificate that is not valid yet.
	at := now
	if at.Before(cert.NotBefore) {
		at = cert.NotBefore
	}
	if at.After(cert.NotAfter) {
		at = cert.NotAfter
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         is.rootPool(),
		Intermediates: is.intermediatePool(),
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("sign ca: the signed certificate does not verify to the roots: %w", err)
	}
	return append([]*x509.Certificate{cert}, is.chain...), nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// selfSigned reports whether c is signed by its own key.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func certsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
