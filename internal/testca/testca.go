package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a root plus a chain of intermediates; the last intermediate (the
// issuer) signs what Issue makes. Every intermediate carries a URI name
// constraint for the trust domain.
type CA struct {
	td       spiffeid.TrustDomain
	root     *x509.Certificate
	rootKey  crypto.Signer
	chain    []*x509.Certificate // issuer first, up to but excluding the root
	key      crypto.Signer       // the issuer's key
	generate int                 // intermediates made so far, for subject names
}

// Option changes what New, Chain and Issue make.
type Option func(*options)

type options struct {
	notBefore, notAfter time.Time
	dnsNames            []string
	key                 crypto.Signer
}

// WithValidity sets the validity window of the certificates the call makes
// (New: root and intermediate; Chain: the new intermediates; Issue: the
// leaf). Use it to make expired or not-yet-valid certificates.
func WithValidity(notBefore, notAfter time.Time) Option {
	return func(o *options) { o.notBefore, o.notAfter = notBefore, notAfter }
}

// WithDNSNames adds DNS SANs to a leaf made by Issue.
func WithDNSNames(names ...string) Option {
	return func(o *options) { o.dnsNames = append(o.dnsNames, names...) }
}

// WithKey makes Issue certify key instead of a fresh P-256 key.
func WithKey(key crypto.Signer) Option {
	return func(o *options) { o.key = key }
}

func apply(opts []Option, lifetime time.Duration) options {
	now := time.Now()
	o := options{notBefore: now.Add(-time.Minute), notAfter: now.Add(lifetime)}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// New makes a self-signed root (valid a year) and one intermediate under it
// for td. It honours WithValidity.
func New(t testing.TB, td spiffeid.TrustDomain, opts ...Option) *CA {
	t.Helper()
	if td.IsZero() {
		t.Fatal("testca.New: zero trust domain")
	}
	o := apply(opts, 365*24*time.Hour)
	rootKey := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"Sigil test"}, CommonName: "testca root " + td.Name()},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	root := create(t, tmpl, tmpl, rootKey.Public(), rootKey)
	ca := &CA{td: td, root: root, rootKey: rootKey, key: rootKey}
	return ca.Chain(t, 1, opts...)
}

// Chain returns a new CA that shares this one's root and whose issuer sits
// depth more intermediates below this CA's issuer. It honours WithValidity.
func (ca *CA) Chain(t testing.TB, depth int, opts ...Option) *CA {
	t.Helper()
	if depth < 1 {
		t.Fatalf("testca.Chain: depth %d, want at least 1", depth)
	}
	o := apply(opts, 30*24*time.Hour)
	next := &CA{td: ca.td, root: ca.root, rootKey: ca.rootKey, chain: ca.chain, key: ca.key, generate: ca.generate}
	for range depth {
		parent := next.root
		if len(next.chain) > 0 {
			parent = next.chain[0]
		}
		key := newKey(t)
		next.generate++
		tmpl := &x509.Certificate{
			SerialNumber:                serial(t),
			Subject:                     pkix.Name{Organization: []string{"Sigil test"}, CommonName: fmt.Sprintf("testca intermediate %d %s", next.generate, ca.td.Name())},
			NotBefore:                   o.notBefore,
			NotAfter:                    o.notAfter,
			IsCA:                        true,
			BasicConstraintsValid:       true,
			KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			URIs:                        []*url.URL{ca.td.ID().URL()},
			PermittedURIDomains:         []string{ca.td.Name()},
			PermittedDNSDomainsCritical: true,
		}
		cert := create(t, tmpl, parent, key.Public(), next.key)
		next.chain = append([]*x509.Certificate{cert}, next.chain...)
		next.key = key
	}
	return next
}

// Issue makes an X509-SVID for spiffeID (which must be in the CA's trust
// domain): one URI SAN, CA=false, critical digitalSignature key usage,
// serverAuth and clientAuth, valid for an hour unless WithValidity says
// otherwise. Its Certificates are the leaf followed by the CA's
// intermediates (not the root). It honours WithValidity, WithDNSNames and
// WithKey.
func (ca *CA) Issue(t testing.TB, spiffeID string, opts ...Option) *x509svid.SVID {
	t.Helper()
	id, err := spiffeid.FromString(spiffeID)
	if err != nil {
		t.Fatalf("testca.Issue: %v", err)
	}
	if !id.MemberOf(ca.td) {
		t.Fatalf("testca.Issue: %s is not in trust domain %s", id, ca.td)
	}
	o := apply(opts, time.Hour)
	key := o.key
	if key == nil {
		key = newKey(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"Sigil test"}},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              o.dnsNames,
	}
	leaf := create(t, tmpl, ca.chain[0], key.Public(), ca.key)
	return &x509svid.SVID{
		ID:           id,
		Certificates: append([]*x509.Certificate{leaf}, ca.chain...),
		PrivateKey:   key,
	}
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Roots returns the CA's root certificate.
func (ca *CA) Roots() []*x509.Certificate { return []*x509.Certificate{ca.root} }

// RootPool returns the roots as a pool for crypto/x509 verification.
func (ca *CA) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// Bundle returns the roots as a go-spiffe X.509 bundle.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, ca.Roots())
}

// Certificates returns the issuer's chain: the issuer first, then its
// intermediates, up to but excluding the root.
func (ca *CA) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.chain...)
}

// Signer returns the issuer's private key.
func (ca *CA) Signer() crypto.Signer { return ca.key }

// RootSigner returns the root's private key.
func (ca *CA) RootSigner() crypto.Signer { return ca.rootKey }

// Files are the PEM files WritePEM wrote.
type Files struct {
	Roots string // the root certificate
	Chain string // the issuer, then its intermediates, excluding the root
	Key   string // the issuer's private key (PKCS#8, mode 0600)
}

// WritePEM writes roots.pem, chain.pem and key.pem into dir.
func (ca *CA) WritePEM(t testing.TB, dir string) Files {
	t.Helper()
	f := Files{
		Roots: filepath.Join(dir, "roots.pem"),
		Chain: filepath.Join(dir, "chain.pem"),
		Key:   filepath.Join(dir, "key.pem"),
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		t.Fatalf("testca: marshal key: %v", err)
	}
	for _, w := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{f.Roots, CertsPEM(ca.Roots()), 0o644},
		{f.Chain, CertsPEM(ca.chain), 0o644},
		{f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
	} {
		if err := os.WriteFile(w.path, w.data, w.perm); err != nil {
			t.Fatalf("testca: %v", err)
		}
	}
	return f
}

// CertsPEM encodes certificates as concatenated PEM blocks.
func CertsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testca: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("testca: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testca: parse certificate: %v", err)
	}
	return cert
}

// CRL returns a DER X.509 CRL signed by the issuer (what Issue signs with)
// listing serials, valid for an hour.
func (ca *CA) CRL(t testing.TB, serials ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixMicro()), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.chain[0], ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
