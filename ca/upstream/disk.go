package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/internal/pemfile"
)

// DiskConfig names the files of an existing PKI's issuing CA.
type DiskConfig struct {
	// CertFile holds the issuing CA certificate, optionally followed by
	// its intermediates (and, optionally, the root).
	CertFile string
	// KeyFile holds the issuing CA's unencrypted PEM key, mode 0600.
	KeyFile string
	// BundleFile holds the root certificate(s). If empty, the last
	// certificate of CertFile is the root and must be self-signed.
	BundleFile string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Disk signs under an existing CA whose certificate and key are files. It
// is safe for concurrent use.
type Disk struct {
	is issuer
}

var _ Upstream = (*Disk)(nil)

// NewDisk loads and checks the files: the key matches the certificate, the
// certificate is a CA with certSign that may sign further CAs, it is valid
// at Now(), and it chains through the intermediates to the roots.
func NewDisk(cfg DiskConfig) (*Disk, error) {
	switch {
	case cfg.CertFile == "":
		return nil, errors.New("disk upstream: no certificate file")
	case cfg.KeyFile == "":
		return nil, errors.New("disk upstream: no key file")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	certs, err := pemfile.ReadCerts(cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: certificate file: %w", err)
	}
	signer, err := keys.ReadKeyFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("disk upstream: %w", err)
	}

	var roots []*x509.Certificate
	if cfg.BundleFile != "" {
		if roots, err = pemfile.ReadCerts(cfg.BundleFile); err != nil {
			return nil, fmt.Errorf("disk upstream: bundle file: %w", err)
		}
	} else {
		last := certs[len(certs)-1]
		if !selfSigned(last) {
			return nil, fmt.Errorf("disk upstream: no bundle file given, and the last certificate of %s (%q) is not a self-signed root: set the bundle file to the root certificate(s)", cfg.CertFile, last.Subject)
		}
		roots = []*x509.Certificate{last}
	}

	is := issuer{cert: certs[0], signer: signer, roots: roots, now: cfg.Now}
	for _, c := range certs {
		if !isRoot(c, roots) {
			is.chain = append(is.chain, c)
		}
	}
	if err := is.check(cfg); err != nil {
		return nil, fmt.Errorf("disk upstream: %w", err)
	}
	return &Disk{is: is}, nil
}

func isRoot(c *x509.Certificate, roots []*x509.Certificate) bool {
	for _, r := range roots {
		if bytes.Equal(c.Raw, r.Raw) {
			return true
		}
	}
	return false
}

func (is *issuer) check(cfg DiskConfig) error {
	c := is.cert
	now := is.now()
	switch {
	case !samePublicKey(c.PublicKey, is.signer.Public()):
		return fmt.Errorf("key %s does not match certificate %s (%q)", cfg.KeyFile, cfg.CertFile, c.Subject)
	case !c.BasicConstraintsValid || !c.IsCA:
		return fmt.Errorf("certificate %s (%q) is not a CA certificate (basic constraints CA=false)", cfg.CertFile, c.Subject)
	case c.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("certificate %s (%q) lacks the certSign key usage", cfg.CertFile, c.Subject)
	case c.MaxPathLen == 0 && c.MaxPathLenZero:
		return fmt.Errorf("certificate %s (%q) has path length 0: it cannot sign the CA's signing certificates", cfg.CertFile, c.Subject)
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %s (%q) expired at %s", cfg.CertFile, c.Subject, formatTime(c.NotAfter))
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %s (%q) is not valid before %s", cfg.CertFile, c.Subject, formatTime(c.NotBefore))
	}
	for _, r := range is.roots {
		if !r.IsCA {
			return fmt.Errorf("bundle certificate %q is not a CA certificate", r.Subject)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots:         is.rootPool(),
		Intermediates: is.intermediatePool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		from := cfg.BundleFile
		if from == "" {
			from = "the last certificate of " + cfg.CertFile
		}
		return fmt.Errorf("certificate %s (%q) does not chain to the roots in %s: %w", cfg.CertFile, c.Subject, from, err)
	}
	return nil
}

// SignCA signs a CA certificate under the issuing CA; the chain it returns
// is the new certificate, the issuing certificate and its intermediates.
func (d *Disk) SignCA(_ context.Context, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	return d.is.signCA(tmpl, pub)
}

// Roots returns the roots of the bundle file (or CertFile's last
// certificate).
func (d *Disk) Roots(context.Context) ([]*x509.Certificate, error) {
	return d.is.rootsCopy(), nil
}
