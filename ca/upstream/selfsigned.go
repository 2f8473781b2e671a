package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
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
// certificates directly. During a root rotation (ca/rootrot.go) it holds
// several roots: the active one signs, the others are trust anchors being
// introduced or retired. CertPath holds them all, the active one first. It
// is safe for concurrent use.
type SelfSigned struct {
	cfg SelfSignedConfig
	// mu guards roots; edits rewrite CertPath under it.
	mu sync.RWMutex
	// roots[0] is the active root.
	roots []rootKey
}

// rootKey is one root certificate and its key.
type rootKey struct {
	cert   *x509.Certificate
	signer crypto.Signer
	name   string // in the key manager
}

var _ Upstream = (*SelfSigned)(nil)

// NewSelfSigned loads the root certificates at CertPath and their keys
// from Keys, or, when CertPath does not exist, makes a root: a new key
// "root", and a certificate with CA=true, the URI SAN spiffe://<trust
// domain>, a URI name constraint for the trust domain and key usage
// certSign|cRLSign, written to CertPath (mode 0644) atomically. A
// certificate whose key is missing is an error, never a reason to make a
// new root. CertPath may hold several roots (left by a root rotation): the
// first is the active one and must be valid now; an expired later one is
// dropped.
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

	roots, err := loadRoots(ctx, cfg)
	if errors.Is(err, fs.ErrNotExist) {
		var rk rootKey
		if rk, err = createRoot(ctx, cfg, RootKeyName); err == nil {
			roots = []rootKey{rk}
			err = writeRoots(cfg.CertPath, roots)
		}
	}
	if err != nil {
		return nil, err
	}
	return &SelfSigned{cfg: cfg, roots: roots}, nil
}

// rootKeyName is the key manager name of a root made by a rotation: the
// first root's key is "root", later ones carry the start of their
// certificate's serial number, so that the certificate alone names its key.
func rootKeyName(serial *big.Int) string {
	h := fmt.Sprintf("%032x", serial)
	return RootKeyName + "-" + h[len(h)-16:]
}

func loadRoots(ctx context.Context, cfg SelfSignedConfig) ([]rootKey, error) {
	certs, err := pemfile.ReadCerts(cfg.CertPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("self-signed root: %w", err)
	}
	if len(certs) > maxRoots {
		return nil, fmt.Errorf("self-signed root: %s holds %d certificates, at most %d", cfg.CertPath, len(certs), maxRoots)
	}
	var out []rootKey
	for i, cert := range certs {
		rk, err := loadRoot(ctx, cfg, cert)
		if err != nil && i > 0 && errors.Is(err, errExpired) {
			continue // a retired root that outlived its file entry
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rk)
	}
	return out, nil
}

// maxRoots bounds CertPath: the active root, one being introduced and a
// few retiring.
const maxRoots = 8

var errExpired = errors.New("expired")

// loadRoot finds cert's key and checks the pair.
func loadRoot(ctx context.Context, cfg SelfSignedConfig, cert *x509.Certificate) (rootKey, error) {
	name := rootKeyName(cert.SerialNumber)
	signer, err := cfg.Keys.Signer(ctx, name)
	if errors.Is(err, keys.ErrNotFound) {
		name = RootKeyName
		signer, err = cfg.Keys.Signer(ctx, name)
	}
	if errors.Is(err, keys.ErrNotFound) {
		return rootKey{}, fmt.Errorf("self-signed root: certificate %s (serial %x) exists but the key manager has no key %q or %q: restore the key, or move the certificate away to make a new root",
			cfg.CertPath, cert.SerialNumber, RootKeyName, rootKeyName(cert.SerialNumber))
	}
	if err != nil {
		return rootKey{}, fmt.Errorf("self-signed root: %w", err)
	}
	now := cfg.Now()
	switch {
	case !samePublicKey(cert.PublicKey, signer.Public()):
		return rootKey{}, fmt.Errorf("self-signed root: key %q does not match certificate %s", name, cfg.CertPath)
	case !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return rootKey{}, fmt.Errorf("self-signed root: %s is not a CA certificate with certSign", cfg.CertPath)
	case !selfSigned(cert):
		return rootKey{}, fmt.Errorf("self-signed root: %s is not self-signed", cfg.CertPath)
	case len(cert.URIs) != 1 || cert.URIs[0].String() != cfg.TrustDomain.IDString():
		return rootKey{}, fmt.Errorf("self-signed root: %s is not for trust domain %s (URI SANs %v)", cfg.CertPath, cfg.TrustDomain, cert.URIs)
	case now.After(cert.NotAfter):
		return rootKey{}, fmt.Errorf("self-signed root: %s %w at %s", cfg.CertPath, errExpired, formatTime(cert.NotAfter))
	case now.Before(cert.NotBefore):
		return rootKey{}, fmt.Errorf("self-signed root: %s is not valid before %s", cfg.CertPath, formatTime(cert.NotBefore))
	}
	return rootKey{cert: cert, signer: signer, name: name}, nil
}

func createRoot(ctx context.Context, cfg SelfSignedConfig, name string) (rootKey, error) {
	sn, err := serialNumber()
	if err != nil {
		return rootKey{}, fmt.Errorf("self-signed root: %w", err)
	}
	if name == "" {
		name = rootKeyName(sn)
	}
	signer, err := cfg.Keys.GenerateKey(ctx, name, cfg.KeyType)
	if err != nil {
		return rootKey{}, fmt.Errorf("self-signed root: %w", err)
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
		return rootKey{}, fmt.Errorf("self-signed root: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return rootKey{}, fmt.Errorf("self-signed root: parse: %w", err)
	}
	return rootKey{cert: cert, signer: signer, name: name}, nil
}

// writeRoots writes the roots to path atomically, the active one first.
func writeRoots(path string, roots []rootKey) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("self-signed root: %w", err)
		}
	}
	certs := make([]*x509.Certificate, len(roots))
	for i, r := range roots {
		certs[i] = r.cert
	}
	if err := atomicfile.Write(path, certsPEM(certs...), 0o644); err != nil {
		return fmt.Errorf("self-signed root: %w", err)
	}
	return nil
}

func (s *SelfSigned) issuer(i int) *issuer {
	roots := make([]*x509.Certificate, len(s.roots))
	for j, r := range s.roots {
		roots[j] = r.cert
	}
	return &issuer{cert: s.roots[i].cert, signer: s.roots[i].signer, roots: roots, now: s.cfg.Now}
}

func (s *SelfSigned) index(root *x509.Certificate) int {
	for i, r := range s.roots {
		if root != nil && bytes.Equal(r.cert.Raw, root.Raw) {
			return i
		}
	}
	return -1
}

// ErrUnknownRoot is returned for a root this upstream does not hold.
var ErrUnknownRoot = errors.New("not one of the self-signed roots")

// SignCA signs a CA certificate directly under the active root; the chain
// it returns is just the new certificate.
func (s *SelfSigned) SignCA(_ context.Context, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.issuer(0).signCA(tmpl, pub)
}

// SignCAUnder signs a CA certificate under root, which need not be the
// active one: a root rotation publishes a key of the new root before the
// new root becomes active.
func (s *SelfSigned) SignCAUnder(_ context.Context, root *x509.Certificate, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := s.index(root)
	if i < 0 {
		return nil, fmt.Errorf("sign ca: %w", ErrUnknownRoot)
	}
	return s.issuer(i).signCA(tmpl, pub)
}

// SignsDirectly reports that the root signs the CA's certificates with no
// intermediate (ca.DirectUpstream).
func (s *SelfSigned) SignsDirectly() bool { return true }

// Roots returns every root, the active one first.
func (s *SelfSigned) Roots(context.Context) ([]*x509.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*x509.Certificate, len(s.roots))
	for i, r := range s.roots {
		out[i] = r.cert
	}
	return out, nil
}

// PrepareRoot makes a new root (a new key named after its serial number)
// and adds it to CertPath after the active one. It does not sign anything
// yet.
func (s *SelfSigned) PrepareRoot(ctx context.Context) (*x509.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.roots) >= maxRoots {
		return nil, fmt.Errorf("self-signed root: already %d roots; wait for the retiring ones to leave", len(s.roots))
	}
	rk, err := createRoot(ctx, s.cfg, "")
	if err != nil {
		return nil, err
	}
	roots := append(slices.Clone(s.roots), rk)
	if err := writeRoots(s.cfg.CertPath, roots); err != nil {
		return nil, err
	}
	s.roots = roots
	return rk.cert, nil
}

// ActivateRoot makes root the one that signs from now on (first in
// CertPath).
func (s *SelfSigned) ActivateRoot(_ context.Context, root *x509.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(root)
	switch {
	case i < 0:
		return fmt.Errorf("activate root: %w", ErrUnknownRoot)
	case i == 0:
		return nil
	}
	roots := append([]rootKey{s.roots[i]}, slices.Delete(slices.Clone(s.roots), i, i+1)...)
	if err := writeRoots(s.cfg.CertPath, roots); err != nil {
		return err
	}
	s.roots = roots
	return nil
}

// RemoveRoot takes a root that is not active out of CertPath and deletes
// its key when the key manager can (keys.Deleter). Removing a root this
// upstream does not hold does nothing.
func (s *SelfSigned) RemoveRoot(ctx context.Context, root *x509.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(root)
	switch {
	case i < 0:
		return nil
	case i == 0:
		return errors.New("remove root: the active root cannot be removed")
	}
	name := s.roots[i].name
	roots := slices.Delete(slices.Clone(s.roots), i, i+1)
	if err := writeRoots(s.cfg.CertPath, roots); err != nil {
		return err
	}
	s.roots = roots
	if d, ok := s.cfg.Keys.(keys.Deleter); ok {
		if err := d.DeleteKey(ctx, name); err != nil && !errors.Is(err, keys.ErrNotFound) {
			return fmt.Errorf("remove root: delete key %q (destroy it by hand): %w", name, err)
		}
	}
	return nil
}
