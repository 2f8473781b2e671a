package revocation

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Errors of Set.Check; callers branch on them with errors.Is.
var (
	// ErrRevoked: a CRL of the certificate's issuer lists its serial.
	ErrRevoked = errors.New("certificate revoked")
	// ErrUnknown: the revocation status cannot be told (no CRLs yet, none
	// for the issuer, or the issuer's CRL is past its nextUpdate). Fail
	// closed: deny.
	ErrUnknown = errors.New("revocation status unknown")
)

// Bounds of a Set: the agent holds at most 64 CRLs and the CA keeps at
// most 10,000 revocations, each listed in every CRL.
const (
	MaxCRLs        = 64
	MaxAuthorities = 64
	MaxEntries     = 20000
)

// Set is one immutable view of our trust domain's authorities and the CRLs
// they signed.
type Set struct {
	byKeyID   map[string]*issuer
	bySubject map[string]*issuer
	tds       map[spiffeid.TrustDomain]bool
}

type issuer struct {
	cert       *x509.Certificate
	crl        bool // a CRL signed by this issuer is known
	nextUpdate time.Time
	serials    map[string]struct{}
}

// NewSet checks every CRL against the authorities (a CRL no authority
// signed is an error) and indexes them. Authorities and CRLs are DER.
func NewSet(authorities []*x509.Certificate, crls [][]byte) (*Set, error) {
	if len(authorities) == 0 {
		return nil, errors.New("revocation set: no authorities")
	}
	if len(authorities) > MaxAuthorities {
		return nil, fmt.Errorf("revocation set: %d authorities, over %d", len(authorities), MaxAuthorities)
	}
	if len(crls) > MaxCRLs {
		return nil, fmt.Errorf("revocation set: %d CRLs, over %d", len(crls), MaxCRLs)
	}
	s := &Set{byKeyID: map[string]*issuer{}, bySubject: map[string]*issuer{}, tds: map[spiffeid.TrustDomain]bool{}}
	all := make([]*issuer, 0, len(authorities))
	for _, a := range authorities {
		is := &issuer{cert: a}
		all = append(all, is)
		if len(a.SubjectKeyId) > 0 {
			s.byKeyID[string(a.SubjectKeyId)] = is
		}
		s.bySubject[string(a.RawSubject)] = is
		for _, u := range a.URIs {
			if id, err := spiffeid.FromURI(u); err == nil {
				s.tds[id.TrustDomain()] = true
			}
		}
	}
	entries := 0
	for i, der := range crls {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("revocation set: crl %d: %w", i, err)
		}
		var signer *issuer
		for _, is := range all {
			if crl.CheckSignatureFrom(is.cert) == nil {
				signer = is
				break
			}
		}
		if signer == nil {
			return nil, fmt.Errorf("revocation set: crl %d (issuer %q) is signed by none of the %d authorities", i, crl.Issuer.String(), len(all))
		}
		entries += len(crl.RevokedCertificateEntries)
		if entries > MaxEntries {
			return nil, fmt.Errorf("revocation set: over %d revoked entries", MaxEntries)
		}
		if signer.crl && !crl.NextUpdate.After(signer.nextUpdate) {
			// An older CRL of the same issuer: keep the newest.
			continue
		}
		signer.crl, signer.nextUpdate = true, crl.NextUpdate
		signer.serials = make(map[string]struct{}, len(crl.RevokedCertificateEntries))
		for _, e := range crl.RevokedCertificateEntries {
			signer.serials[serialKey(e.SerialNumber)] = struct{}{}
		}
	}
	return s, nil
}

func serialKey(n *big.Int) string { return string(n.Bytes()) }

// Check returns nil when cert is not revoked at now, an error wrapping
// ErrRevoked when its issuer's CRL lists it, and one wrapping ErrUnknown
// when that cannot be told. A certificate of another trust domain (a
// federated peer) is not checked: the agent holds no CRLs for it.
func (s *Set) Check(cert *x509.Certificate, now time.Time) error {
	if s == nil {
		return fmt.Errorf("%w: no CRLs received from the agent yet", ErrUnknown)
	}
	is := s.issuerOf(cert)
	if is == nil {
		if len(cert.URIs) == 1 {
			if id, err := spiffeid.FromURI(cert.URIs[0]); err == nil && !s.tds[id.TrustDomain()] {
				return nil
			}
		}
		return fmt.Errorf("%w: issuer of serial %x is not an authority of the trust domain bundle", ErrUnknown, cert.SerialNumber)
	}
	if !is.crl {
		return fmt.Errorf("%w: no CRL of issuer key %x", ErrUnknown, is.cert.SubjectKeyId)
	}
	if !now.Before(is.nextUpdate) {
		return fmt.Errorf("%w: CRL of issuer key %x is past its nextUpdate (%s)", ErrUnknown, is.cert.SubjectKeyId, is.nextUpdate.UTC().Format(time.RFC3339))
	}
	if cert.SerialNumber != nil {
		if _, ok := is.serials[serialKey(cert.SerialNumber)]; ok {
			return fmt.Errorf("%w: serial %x by issuer key %x", ErrRevoked, cert.SerialNumber, is.cert.SubjectKeyId)
		}
	}
	return nil
}

func (s *Set) issuerOf(cert *x509.Certificate) *issuer {
	if len(cert.AuthorityKeyId) > 0 {
		if is, ok := s.byKeyID[string(cert.AuthorityKeyId)]; ok {
			return is
		}
		return nil
	}
	return s.bySubject[string(cert.RawIssuer)]
}

// MaxPEMBytes bounds a URL-encoded PEM peer certificate (chain).
const MaxPEMBytes = 64 << 10

// ParseURLEncodedPEM returns the first certificate (the leaf) of the
// URL-encoded PEM Envoy sends as attributes.source.certificate when its
// ext_authz filter sets include_peer_certificate.
func ParseURLEncodedPEM(s string) (*x509.Certificate, error) {
	if len(s) > MaxPEMBytes {
		return nil, fmt.Errorf("peer certificate of %d bytes is over %d", len(s), MaxPEMBytes)
	}
	// Envoy escapes "\n", " ", "+", "/" and "=" with %XX. PathUnescape,
	// not QueryUnescape: a literal '+' must stay '+'.
	p, err := url.PathUnescape(s)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	rest := []byte(p)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("peer certificate: no PEM CERTIFICATE block")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("peer certificate: %w", err)
		}
		return cert, nil
	}
}
