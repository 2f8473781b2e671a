package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MaxCSRSize bounds a CSR from outside.
const MaxCSRSize = 16 << 10

// ErrInvalidCSR is wrapped by every reason a CSR is refused.
var ErrInvalidCSR = errors.New("invalid csr")

// CSR is a checked certificate signing request for an X509-SVID.
type CSR struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	DNSNames  []string
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// ParseCSR parses and checks a DER CSR for an X509-SVID in td: a valid
// self-signature, an acceptable key, exactly one URI SAN holding a SPIFFE ID
// of td, no IP or email SANs, and no request to be a CA.
func ParseCSR(der []byte, td spiffeid.TrustDomain) (*CSR, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidCSR)
	}
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCSR, MaxCSRSize)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", ErrInvalidCSR, err)
	}
	if err := checkLeafKey(req.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if n := len(req.URIs); n != 1 {
		return nil, fmt.Errorf("%w: want exactly one URI SAN (the SPIFFE ID), got %d", ErrInvalidCSR, n)
	}
	id, err := spiffeid.FromURI(req.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("%w: URI SAN is not a SPIFFE ID: %v", ErrInvalidCSR, err)
	}
	if !id.MemberOf(td) {
		return nil, fmt.Errorf("%w: SPIFFE ID %s is not in trust domain %s", ErrInvalidCSR, id, td)
	}
	if len(req.IPAddresses) > 0 || len(req.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: IP and email SANs are not allowed in an X509-SVID", ErrInvalidCSR)
	}
	for _, ext := range req.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil || bc.IsCA {
				return nil, fmt.Errorf("%w: asks to be a CA (basic constraints CA=true)", ErrInvalidCSR)
			}
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil || bits.At(5) == 1 || bits.At(6) == 1 {
				return nil, fmt.Errorf("%w: asks for certificate or CRL signing key usage", ErrInvalidCSR)
			}
		}
	}
	return &CSR{ID: id, PublicKey: req.PublicKey, DNSNames: req.DNSNames}, nil
}

// checkLeafKey accepts ECDSA P-256/P-384, RSA 2048–8192 and Ed25519.
func checkLeafKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s not allowed: use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 || bits > 8192 {
			return fmt.Errorf("RSA key of %d bits not allowed: use 2048 to 8192", bits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T not allowed", pub)
	}
	return nil
}

// SVIDParams is what the registration entry adds to a CSR.
type SVIDParams struct {
	TTL      time.Duration // 0: the CA's default
	DNSNames []string      // the entry's DNS names; the CSR may ask for a subset
	// EntryID names the registration entry the SVID is issued for. It is
	// recorded in the certificate (see EntryIDFromCert) so that rights held
	// by the entry, such as admin, stay with that entry and do not spread to
	// other entries that share its SPIFFE ID. Empty for agent SVIDs.
	EntryID string
}

// oidSerialNumber is the X.520 serialNumber attribute of a subject name. The
// CA puts the entry ID there: a standard attribute that every X.509 parser
// reads (go-spiffe and TLS ignore it), with no private OID to register.
var oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}

// MaxEntryIDLen bounds the entry ID recorded in an SVID.
const MaxEntryIDLen = 128

// EntryIDFromCert returns the registration entry ID that the CA recorded
// in an X509-SVID it signed, or "" when there is none (agent SVIDs, the CA's
// own, SVIDs of other issuers). A subject with more than one serialNumber
// attribute is not one the CA made and yields "". Only the CA's signature
// makes the value meaningful: call it on a verified chain's leaf.
func EntryIDFromCert(cert *x509.Certificate) string {
	id := ""
	n := 0
	for _, atv := range cert.Subject.Names {
		if !atv.Type.Equal(oidSerialNumber) {
			continue
		}
		n++
		if s, ok := atv.Value.(string); ok {
			id = s
		}
	}
	if n != 1 || len(id) > MaxEntryIDLen {
		return ""
	}
	return id
}

// X509SVID is a signed, checked SVID chain: leaf, then the CA's chain up to
// but excluding the root.
type X509SVID struct {
	ID           spiffeid.ID
	Certificates []*x509.Certificate
	// CAKeyID is the ID of the CA key that signed the leaf.
	CAKeyID string
}

// SignX509SVID signs csr, then checks the result with go-spiffe against the
// signing CA certificate before returning it.
func (c *CA) SignX509SVID(ctx context.Context, csr *CSR, p SVIDParams) (*X509SVID, error) {
	for _, name := range csr.DNSNames {
		if !slices.Contains(p.DNSNames, name) {
			return nil, fmt.Errorf("%w: DNS name %q is not in the registration entry", ErrInvalidCSR, name)
		}
	}
	if !csr.ID.MemberOf(c.cfg.TrustDomain) {
		return nil, fmt.Errorf("%w: SPIFFE ID %s is not in trust domain %s", ErrInvalidCSR, csr.ID, c.cfg.TrustDomain)
	}
	ttl := p.TTL
	if ttl <= 0 {
		ttl = c.cfg.X509SVIDTTL
	}
	if len(p.EntryID) > MaxEntryIDLen {
		return nil, fmt.Errorf("%w: entry id longer than %d bytes", ErrInvalidCSR, MaxEntryIDLen)
	}
	svid, err := c.signLeaf(csr.ID, csr.PublicKey, p.DNSNames, ttl, p.EntryID)
	c.metrics.signed(X509, err)
	if err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", csr.ID, err)
	}
	return svid, nil
}

func (c *CA) signLeaf(id spiffeid.ID, pub crypto.PublicKey, dns []string, ttl time.Duration, entryID string) (*X509SVID, error) {
	st := c.cur.Load()
	if st == nil || st.activeX509 == nil {
		return nil, ErrNotReady
	}
	slot := st.activeX509
	now := c.cfg.Now()
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-backdate)
	if notBefore.Before(slot.cert.NotBefore) {
		notBefore = slot.cert.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(slot.cert.NotAfter) {
		notAfter = slot.cert.NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Sigil"}, SerialNumber: entryID},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dns,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, slot.cert, pub, slot.signer)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed certificate: %w", err)
	}
	// Build, sign, check: nothing leaves without passing go-spiffe.
	if _, _, err := x509svid.Verify([]*x509.Certificate{leaf}, slot.self, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("signed svid fails its own check: %w", err)
	}
	c.noteSigned(now)
	certs := make([]*x509.Certificate, 0, 1+len(slot.chain))
	certs = append(certs, leaf)
	certs = append(certs, slot.chain...)
	return &X509SVID{ID: id, Certificates: certs, CAKeyID: slot.rec.ID}, nil
}

// refreshServerSVID mints the CA's own TLS identity when forced, when there
// is none, or when the current one has lived half its life.
func (c *CA) refreshServerSVID(ctx context.Context, force bool) error {
	if cur := c.server.Load(); cur != nil && !force {
		leaf := cur.Certificates[0]
		if !PrepareDue(c.cfg.Now(), leaf.NotBefore.Add(backdate), leaf.NotAfter) {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca server key: %w", err)
	}
	svid, err := c.signLeaf(c.id, key.Public(), nil, c.cfg.X509SVIDTTL, "")
	if err != nil {
		return fmt.Errorf("ca server svid: %w", err)
	}
	c.server.Store(&x509svid.SVID{ID: c.id, Certificates: svid.Certificates, PrivateKey: key})
	return nil
}

// GetX509SVID returns the CA's own TLS identity (x509svid.Source).
func (c *CA) GetX509SVID() (*x509svid.SVID, error) {
	s := c.server.Load()
	if s == nil {
		return nil, ErrNotReady
	}
	return s, nil
}
