package nodeattest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/pemfile"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// Bounds on what an agent may send for x509pop.
const (
	MaxCertificates   = 8
	MaxCertificateLen = 16 << 10
	// NonceLen is the size of the random challenge.
	NonceLen = 32
	// maxSignatureLen bounds the challenge response (RSA-8192 is 1 KiB).
	maxSignatureLen = 2048
)

// X509PoPConfig configures the x509pop attestor.
type X509PoPConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Roots are the CAs that node certificates must chain to. Required.
	Roots []*x509.Certificate
	Now   func() time.Time // default time.Now
	Rand  io.Reader        // nonces; default crypto/rand.Reader
}

// X509PoP attests nodes that hold the private key of a certificate chaining
// to configured roots (an existing PKI). The agent sends its chain (leaf
// first); the CA verifies it at now with any extended key usage, sends a
// NonceLen-byte nonce, and checks the answer with the leaf's public key:
//
//   - ECDSA: ASN.1 signature over SHA-256(nonce)
//   - RSA: PKCS #1 v1.5 signature over SHA-256(nonce)
//   - Ed25519: signature over the nonce itself (Ed25519 hashes internally)
//
// The agent ID is spiffe://TD/sigil/agent/x509pop/<hex SHA-256 of the leaf
// DER>. Node selectors: x509pop:subject:cn:<cn>, x509pop:serialnumber:<hex>,
// x509pop:san:dns:<name> per DNS SAN, and x509pop:ca:fingerprint:<hex
// SHA-256> for every intermediate and the root of the verified chain.
// Values that are not valid selectors (e.g. control characters in a CN) are
// left out.
type X509PoP struct {
	td    spiffeid.TrustDomain
	roots *x509.CertPool
	now   func() time.Time
	rand  io.Reader
}

// NewX509PoP checks cfg and returns the attestor.
func NewX509PoP(cfg X509PoPConfig) (*X509PoP, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("x509pop attestor: trust domain is required")
	}
	if len(cfg.Roots) == 0 {
		return nil, errors.New("x509pop attestor: at least one root certificate is required")
	}
	pool := x509.NewCertPool()
	for _, r := range cfg.Roots {
		pool.AddCert(r)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &X509PoP{td: cfg.TrustDomain, roots: pool, now: cfg.Now, rand: cfg.Rand}, nil
}

// LoadRoots reads a PEM bundle of CA certificates (the x509pop roots file).
func LoadRoots(path string) ([]*x509.Certificate, error) {
	roots, err := pemfile.ReadCerts(path)
	if err != nil {
		return nil, fmt.Errorf("x509pop roots: %w", err)
	}
	for i, c := range roots {
		if !c.IsCA {
			return nil, fmt.Errorf("x509pop roots %s: certificate %d (%s) is not a CA", path, i+1, c.Subject)
		}
	}
	return roots, nil
}

// Type implements Attestor.
func (x *X509PoP) Type() string { return TypeX509PoP }

// Attest verifies the chain, then the proof of possession of its leaf key.
func (x *X509PoP) Attest(ctx context.Context, p *nodev1.AttestParams, challenge Challenge) (Result, error) {
	ders := p.GetCertificates()
	switch {
	case p.GetToken() != "":
		return Result{}, fmt.Errorf("%w: x509pop: token is not used by this method", ErrInvalid)
	case len(ders) == 0:
		return Result{}, fmt.Errorf("%w: x509pop: certificates are required (leaf first)", ErrInvalid)
	case len(ders) > MaxCertificates:
		return Result{}, fmt.Errorf("%w: x509pop: %d certificates, at most %d", ErrInvalid, len(ders), MaxCertificates)
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		if len(der) > MaxCertificateLen {
			return Result{}, fmt.Errorf("%w: x509pop: certificate %d larger than %d bytes", ErrInvalid, i, MaxCertificateLen)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return Result{}, fmt.Errorf("%w: x509pop: certificate %d: %v", ErrInvalid, i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if leaf.IsCA {
		return Result{}, fmt.Errorf("%w: x509pop: the leaf certificate is a CA", ErrRefused)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         x.roots,
		Intermediates: inter,
		CurrentTime:   x.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return Result{}, fmt.Errorf("%w: x509pop: certificate does not chain to a trusted root: %v", ErrRefused, err)
	}
	if challenge == nil {
		return Result{}, errors.New("x509pop: no challenge channel")
	}
	nonce := make([]byte, NonceLen)
	if _, err := io.ReadFull(x.rand, nonce); err != nil {
		return Result{}, fmt.Errorf("x509pop: make nonce: %w", err)
	}
	sig, err := challenge(ctx, nonce)
	if err != nil {
		return Result{}, fmt.Errorf("x509pop: challenge: %w", err)
	}
	if err := VerifyPoP(leaf.PublicKey, nonce, sig); err != nil {
		return Result{}, fmt.Errorf("%w: x509pop: %v", ErrRefused, err)
	}
	fp := sha256.Sum256(leaf.Raw)
	id, err := sigilid.Agent(x.td, TypeX509PoP, hex.EncodeToString(fp[:]))
	if err != nil {
		return Result{}, fmt.Errorf("x509pop: agent id: %w", err)
	}
	return Result{AgentID: id, Selectors: x509Selectors(leaf, chains[0][1:])}, nil
}

// VerifyPoP checks sig, the answer to nonce, with pub (see X509PoP).
func VerifyPoP(pub crypto.PublicKey, nonce, sig []byte) error {
	if len(sig) == 0 || len(sig) > maxSignatureLen {
		return errors.New("challenge response is empty or too long")
	}
	digest := sha256.Sum256(nonce)
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, nonce, sig)
	default:
		return fmt.Errorf("leaf key type %T is not supported", pub)
	}
	if !ok {
		return errors.New("challenge response is not a signature by the certificate's key")
	}
	return nil
}

func x509Selectors(leaf *x509.Certificate, cas []*x509.Certificate) []selector.Selector {
	var out []selector.Selector
	add := func(value string) {
		s := selector.Selector{Type: TypeX509PoP, Value: value}
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	if cn := leaf.Subject.CommonName; cn != "" {
		add("subject:cn:" + cn)
	}
	add("serialnumber:" + leaf.SerialNumber.Text(16))
	for _, name := range leaf.DNSNames {
		add("san:dns:" + name)
	}
	for _, c := range cas {
		fp := sha256.Sum256(c.Raw)
		add("ca:fingerprint:" + hex.EncodeToString(fp[:]))
	}
	return selector.Normalize(out)
}
