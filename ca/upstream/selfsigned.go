package upstream

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/internal/atomicfile"
	"github.com/sigilhq/sigil/internal/pemfile"
)

// RootKeyName is the logical name of the self-signed root's key.
const RootKeyName = "root"

// DefaultRootTTL is how long a new self-signed root is valid by default.
const DefaultRootTTL = 8760 * time.Hour

// SelfSignedConfig configures a self-signed root.
type SelfSignedConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Keys holds the root's key under the name "root".
	Keys keys.Manager
	// KeyType of a new root key; default ec-p256.
	KeyType keys.Type
	// CertPath is the root certificate's PEM file.
	CertPath string
	// TTL of a new root; default 8760h (a year).
	TTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// SelfSigned is a root of Sigil's own that signs the CA's signing
// certificates directly. It is safe for concurrent use.
type SelfSigned struct {
	is issuer
}

var _ Upstream = (*SelfSigned)(nil)

// NewSelfSigned loads the root certificate at CertPath and its key "root"
// from Keys, or, when CertPath does not exist, makes both: a new key, and a
// certificate with CA=true, the URI SAN spiffe://<trust domain>, a URI name
// constraint for the trust domain and key usage certSign|cRLSign, written to
// CertPath (mode 0644) atomically. A certificate whose key is missing is an
// error, never a reason to make a new root.
func NewSelfSigned(ctx context.Context, cfg SelfSignedConfig) (*SelfSigned, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("self-signed root: no trust domain")
	case cfg.Keys == nil:
		return nil, errors.New("self-signed root: no key manager")
	case cfg.CertPath == "":
		return nil, errors.New("self-signed root: no certificate path")
	case cfg.TTL < 0:
		return nil, fmt.Errorf("self-signed root: negative ttl %s", cfg.TTL)
	}
	if cfg.KeyType == "" {
		cfg.KeyType = keys.ECP256
	}
	if _, err := keys.ParseType(string(cfg.KeyType)); err != nil {
		return nil, fmt.Errorf("self-signed root: %w", err)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultRootTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	cert, signer, err := loadRoot(ctx, cfg)
	if errors.Is(err, fs.ErrNotExist) {
		cert, signer, err = createRoot(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	return &SelfSigned{is: issuer{
		cert:   cert,
		signer: signer,
		roots:  []*x509.Certificate{cert},
		now:    cfg.Now,
	}}, nil
}

// loadRoot returns an error wrapping fs.ErrNotExist only when there is no
// certificate file.
func loadRoot(ctx context.Context, cfg SelfSignedConfig) (*x509.Certificate, crypto.Signer, error) {
	certs, err := pemfile.ReadCerts(cfg.CertPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("self-signed root: %w", err)
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("self-signed root: %s holds %d certificates, want 1", cfg.CertPath, len(certs))
	}
	cert := certs[0]
	signer, err := cfg.Keys.Signer(ctx, RootKeyName)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, nil, fmt.Errorf("self-signed root: certificate %s exists but the key manager has no key %q: restore the key, or move the certificate away to make a new root", cfg.CertPath, RootKeyName)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed root: %w", err)
	}
	now := cfg.Now()
	switch {
	case !samePublicKey(cert.PublicKey, signer.Public()):
		return nil, nil, fmt.Errorf("self-signed root: key %q does not match certificate %s", RootKeyName, cfg.CertPath)
	case !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, nil, fmt.Errorf("self-signed root: %s is not a CA certificate with certSign", cfg.CertPath)
	case !selfSigned(cert):
		return nil, nil, fmt.Errorf("self-signed root: %s is not self-signed", cfg.CertPath)
	case len(cert.URIs) != 1 || cert.URIs[0].String() != cfg.TrustDomain.IDString():
		return nil, nil, fmt.Errorf("self-signed root: %s is not for trust domain %s (URI SANs %v)", cfg.CertPath, cfg.TrustDomain, cert.URIs)
	case now.After(cert.NotAfter):
		return nil, nil, fmt.Errorf("self-signed root: %s expired at %s", cfg.CertPath, formatTime(cert.NotAfter))
	case now.Before(cert.NotBefore):
		return nil, nil, fmt.Errorf("self-signed root: %s is not valid before %s", cfg.CertPath, formatTime(cert.NotBefore))
	}
	return cert, signer, nil
}

func createRoot(ctx context.Context, cfg SelfSignedConfig) (*x509.Certificate, crypto.Signer, error) {
	signer, err := cfg.Keys.GenerateKey(ctx, RootKeyName, cfg.KeyType)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed root: %w", err)
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed root: %w", err)
	}
	now := cfg.Now()
	td := cfg.TrustDomain
	tdURL := td.ID().URL()
	tmpl := &x509.Certificate{
		SerialNumber:                sn,
		Subject:                     pkix.Name{Organization: []string{"Sigil"}, CommonName: "Sigil root CA " + td.Name()},
		NotBefore:                   now,
		NotAfter:                    now.Add(cfg.TTL),
		IsCA:                        true,
		BasicConstraintsValid:       true,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                        []*url.URL{tdURL},
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed root: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed root: parse: %w", err)
	}
	if dir := filepath.Dir(cfg.CertPath); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("self-signed root: %w", err)
		}
	}
	if err := atomicfile.Write(cfg.CertPath, certsPEM(cert), 0o644); err != nil {
		return nil, nil, fmt.Errorf("self-signed root: %w", err)
	}
	return cert, signer, nil
}

// SignCA signs a CA certificate directly under the root; the chain it
// returns is just the new certificate.
func (s *SelfSigned) SignCA(_ context.Context, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	return s.is.signCA(tmpl, pub)
}

// SignsDirectly reports that the root signs the CA's certificates with no
// intermediate (ca.DirectUpstream).
func (s *SelfSigned) SignsDirectly() bool { return true }

// Roots returns the root certificate.
func (s *SelfSigned) Roots(context.Context) ([]*x509.Certificate, error) {
	return s.is.rootsCopy(), nil
}
