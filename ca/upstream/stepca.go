package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/internal/pemfile"
)

// StepCAConfig names a running step-ca and the provisioner that signs the
// CA's signing certificates. The provisioner's X.509 template must issue
// CA certificates (see docs/step-ca.md): step-ca's default template makes
// leaves.
type StepCAConfig struct {
	// URL of step-ca, e.g. https://ca.internal:9000.
	URL string
	// RootFingerprint is the hex SHA-256 of step-ca's root certificate;
	// the root is fetched from step-ca and checked against it. Exactly one
	// of RootFingerprint and RootFile.
	RootFingerprint string
	// RootFile holds step-ca's root certificate(s) in PEM.
	RootFile string
	// Provisioner is the provisioner's name (a JWK or an X5C provisioner).
	Provisioner string
	// JWK provisioner: PasswordFile decrypts the provisioner key, read from
	// JWKKeyFile, or, when that is empty, fetched from step-ca's
	// /provisioners list (its encryptedKey).
	JWKKeyFile   string
	PasswordFile string
	// X5C provisioner: a certificate (with its intermediates) that chains to
	// one of the provisioner's roots, and its key (PEM, unencrypted).
	X5CCertFile string
	X5CKeyFile  string
	// Timeout of each request to step-ca; default 15s.
	Timeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Metrics registers sigil_upstream_* series (nil: none).
	Metrics prometheus.Registerer
}

// Health is how the latest requests to an upstream went.
type Health struct {
	Type, Target        string
	LastSuccess         time.Time // zero: none yet
	LastFailure         time.Time // zero: none yet
	LastError           string    // of the latest failure
	ConsecutiveFailures int       // 0: the latest request succeeded
}

// StepCA has a running step-ca sign the CA's signing certificates over
// step-ca's HTTPS API (/1.0/sign with a one-time token of the provisioner).
// Its roots are fetched (or read) once, at construction, so a step-ca
// outage fails only SignCA: the CA keeps signing with its active key and
// retries the rotation. It is safe for concurrent use.
type StepCA struct {
	cfg    StepCAConfig
	base   *url.URL
	client *http.Client
	roots  []*x509.Certificate

	requests *prometheus.CounterVec
	up       prometheus.Gauge

	mu     sync.Mutex
	jwk    *jose.JSONWebKey // the decrypted provisioner key, once fetched
	health Health
}

// stepcaAPI is what SignCA needs from step-ca beyond a public key: a CSR
// must be signed by the new key.
var _ interface {
	SignCAWithSigner(ctx context.Context, tmpl *x509.Certificate, signer crypto.Signer) ([]*x509.Certificate, error)
} = (*StepCA)(nil)

// NewStepCA checks the config and establishes step-ca's roots: from
// RootFile, or fetched from step-ca and matched to RootFingerprint (then
// step-ca must be reachable). Provisioner credentials are read now when
// they are files, and fetched at the first signing otherwise.
func NewStepCA(ctx context.Context, cfg StepCAConfig) (*StepCA, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	base, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return nil, errors.New("step-ca upstream: no url")
	case err != nil:
		return nil, fmt.Errorf("step-ca upstream: url: %w", err)
	case base.Scheme != "https" || base.Host == "":
		return nil, fmt.Errorf("step-ca upstream: url %q: want https://host[:port]", cfg.URL)
	case (cfg.RootFingerprint == "") == (cfg.RootFile == ""):
		return nil, errors.New("step-ca upstream: set exactly one of root fingerprint and root file")
	case cfg.Provisioner == "":
		return nil, errors.New("step-ca upstream: no provisioner name")
	case cfg.X5CCertFile != "" || cfg.X5CKeyFile != "":
		if cfg.X5CCertFile == "" || cfg.X5CKeyFile == "" {
			return nil, errors.New("step-ca upstream: an x5c provisioner needs both a certificate and a key file")
		}
		if cfg.JWKKeyFile != "" || cfg.PasswordFile != "" {
			return nil, errors.New("step-ca upstream: set either x5c files or jwk key/password, not both")
		}
	case cfg.PasswordFile == "":
		return nil, errors.New("step-ca upstream: a jwk provisioner needs a password file")
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	s := &StepCA{cfg: cfg, base: base}
	s.health = Health{Type: "step_ca", Target: base.String()}

	if cfg.RootFile != "" {
		if s.roots, err = pemfile.ReadCerts(cfg.RootFile); err != nil {
			return nil, fmt.Errorf("step-ca upstream: root file: %w", err)
		}
	} else if s.roots, err = s.fetchRoots(ctx); err != nil {
		return nil, fmt.Errorf("step-ca upstream: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range s.roots {
		pool.AddCert(r)
	}
	s.client = &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy:           http.ProxyFromEnvironment,
	}}
	if cfg.JWKKeyFile != "" {
		data, err := os.ReadFile(cfg.JWKKeyFile)
		if err != nil {
			return nil, fmt.Errorf("step-ca upstream: jwk key file: %w", err)
		}
		pw, err := readPassword(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("step-ca upstream: %w", err)
		}
		if s.jwk, err = decryptJWK(string(data), pw); err != nil {
			return nil, fmt.Errorf("step-ca upstream: jwk key file %s: %w", cfg.JWKKeyFile, err)
		}
	}
	if cfg.X5CCertFile != "" {
		if _, _, err := s.x5c(); err != nil {
			return nil, fmt.Errorf("step-ca upstream: %w", err)
		}
	}
	if err := s.register(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("step-ca upstream: %w", err)
	}
	return s, nil
}

func (s *StepCA) register(reg prometheus.Registerer) error {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_upstream_requests_total",
		Help: "Requests to the upstream CA, by operation and result (ok, error).",
	}, []string{"op", "result"})
	s.up = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sigil_upstream_up",
		Help: "1 if the latest request to the upstream CA succeeded, 0 if it failed.",
	})
	s.up.Set(1)
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{s.requests, s.up} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// fetchRoots gets the root named by the fingerprint over a connection that
// trusts nothing yet, checks the fingerprint, then lists every root over a
// connection that trusts that one.
func (s *StepCA) fetchRoots(ctx context.Context) ([]*x509.Certificate, error) {
	fp := strings.ToLower(strings.ReplaceAll(s.cfg.RootFingerprint, ":", ""))
	if b, err := hex.DecodeString(fp); err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("root fingerprint %q: want 64 hex digits (the SHA-256 of the root certificate)", s.cfg.RootFingerprint)
	}
	blind := &http.Client{Timeout: s.cfg.Timeout, Transport: &http.Transport{
		// The root is authenticated by its fingerprint below, not by TLS.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec
	}}
	var one struct {
		CA string `json:"ca"`
	}
	if err := s.do(ctx, blind, http.MethodGet, "/root/"+fp, nil, &one); err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	certs, err := pemfile.ParseCerts([]byte(one.CA))
	if err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	sum := sha256.Sum256(certs[0].Raw)
	if hex.EncodeToString(sum[:]) != fp {
		return nil, fmt.Errorf("fetch root: step-ca returned a root whose fingerprint is %x, not %s", sum, fp)
	}
	root := certs[0]
	pool := x509.NewCertPool()
	pool.AddCert(root)
	trusted := &http.Client{Timeout: s.cfg.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	var all struct {
		Certificates []string `json:"crts"`
	}
	if err := s.do(ctx, trusted, http.MethodGet, "/roots", nil, &all); err != nil {
		return nil, fmt.Errorf("list roots: %w", err)
	}
	roots := []*x509.Certificate{root}
	for _, p := range all.Certificates {
		cs, err := pemfile.ParseCerts([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("list roots: %w", err)
		}
		for _, c := range cs {
			if !slices.ContainsFunc(roots, c.Equal) {
				roots = append(roots, c)
			}
		}
	}
	return roots, nil
}

// Roots returns step-ca's roots, established at construction.
func (s *StepCA) Roots(context.Context) ([]*x509.Certificate, error) {
	return append([]*x509.Certificate(nil), s.roots...), nil
}

// Health reports how the latest requests to step-ca went.
func (s *StepCA) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// SignCA cannot sign with only a public key: step-ca needs a CSR, which
// the new key must sign. Callers use SignCAWithSigner.
func (s *StepCA) SignCA(context.Context, *x509.Certificate, crypto.PublicKey) ([]*x509.Certificate, error) {
	return nil, errors.New("step-ca upstream: signing needs the new key to sign a csr (use SignCAWithSigner)")
}

// SignCAWithSigner has step-ca sign a CA certificate for signer's key: a
// CSR with tmpl's subject and URIs, a one-time token of the provisioner,
// and tmpl's NotBefore and NotAfter as the requested validity (step-ca may shorten it to its
// provisioner's maximum). The result must be a CA certificate for the key
// with certSign, the template's URIs, a URI name constraint and a chain to
// the roots; its chain excludes the roots.
func (s *StepCA) SignCAWithSigner(ctx context.Context, tmpl *x509.Certificate, signer crypto.Signer) (chain []*x509.Certificate, err error) {
	switch {
	case tmpl == nil:
		return nil, errors.New("sign ca: nil template")
	case signer == nil:
		return nil, errors.New("sign ca: nil signer")
	case tmpl.NotAfter.IsZero():
		return nil, errors.New("sign ca: template has no NotAfter")
	}
	defer func() { s.record("sign", err) }()
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: tmpl.Subject, URIs: tmpl.URIs}, signer)
	if err != nil {
		return nil, fmt.Errorf("sign ca: csr: %w", err)
	}
	sans := make([]string, len(tmpl.URIs))
	for i, u := range tmpl.URIs {
		sans[i] = u.String()
	}
	ott, err := s.token(ctx, tmpl.Subject.CommonName, sans)
	if err != nil {
		return nil, fmt.Errorf("sign ca: %w", err)
	}
	req := map[string]any{
		"csr":      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		"ott":      ott,
		"notAfter": tmpl.NotAfter.UTC().Format(time.RFC3339),
	}
	if !tmpl.NotBefore.IsZero() {
		// Given a NotBefore, step-ca does not backdate on its own.
		req["notBefore"] = tmpl.NotBefore.UTC().Format(time.RFC3339)
	}
	var resp struct {
		Crt       string   `json:"crt"`
		CA        string   `json:"ca"`
		CertChain []string `json:"certChain"`
	}
	if err := s.do(ctx, s.client, http.MethodPost, "/1.0/sign", req, &resp); err != nil {
		if s.cfg.X5CCertFile != "" && errors.Is(err, errUnauthorized) {
			// step-ca tells its client no more than "unauthorized".
			if why := s.diagnoseX5C(ctx); why != nil {
				return nil, fmt.Errorf("sign ca: step-ca %s refused the x5c token: %w", s.base, why)
			}
		}
		return nil, fmt.Errorf("sign ca: step-ca %s: %w", s.base, err)
	}
	return s.checkSigned(resp.Crt, resp.CA, resp.CertChain, tmpl, signer.Public())
}

// checkSigned parses step-ca's answer and checks it is what a signing
// certificate of the CA must be.
func (s *StepCA) checkSigned(crt, caPEM string, chainPEM []string, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	var all []*x509.Certificate
	parts := chainPEM
	if len(parts) == 0 {
		parts = []string{crt, caPEM}
	}
	for _, p := range parts {
		cs, err := pemfile.ParseCerts([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("sign ca: step-ca's answer: %w", err)
		}
		all = append(all, cs...)
	}
	var chain []*x509.Certificate
	for _, c := range all {
		if !isRoot(c, s.roots) && !slices.ContainsFunc(chain, c.Equal) {
			chain = append(chain, c)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("sign ca: step-ca returned no certificate")
	}
	cert := chain[0]
	const hint = "; the provisioner's x509 template must make CA certificates (see docs/step-ca.md)"
	switch {
	case !samePublicKey(cert.PublicKey, pub):
		return nil, errors.New("sign ca: step-ca returned a certificate for another key")
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return nil, errors.New("sign ca: step-ca returned a certificate that is not a CA (basic constraints CA=false)" + hint)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, errors.New("sign ca: step-ca returned a certificate without the certSign key usage" + hint)
	case !sameURIs(cert.URIs, tmpl.URIs):
		return nil, fmt.Errorf("sign ca: step-ca returned URI SANs %v, want %v%s", cert.URIs, tmpl.URIs, hint)
	case !slices.Equal(cert.PermittedURIDomains, tmpl.PermittedURIDomains):
		return nil, fmt.Errorf("sign ca: step-ca returned permitted URI domains %q, want the name constraint %q%s",
			cert.PermittedURIDomains, tmpl.PermittedURIDomains, hint)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	for _, r := range s.roots {
		roots.AddCert(r)
	}
	at := s.cfg.Now()
	if at.Before(cert.NotBefore) {
		at = cert.NotBefore
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("sign ca: step-ca's certificate does not verify to its roots: %w", err)
	}
	return chain, nil
}

func sameURIs(a, b []*url.URL) bool {
	return slices.EqualFunc(a, b, func(x, y *url.URL) bool { return x.String() == y.String() })
}

// token makes a one-time token of the provisioner for sub and sans.
func (s *StepCA) token(ctx context.Context, sub string, sans []string) (string, error) {
	now := s.cfg.Now()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	aud := s.base.String() + "/1.0/sign"
	if s.cfg.X5CCertFile != "" {
		// step-ca finds a JWK provisioner by the token's kid, any other
		// by the audience's fragment: <type>/<name>.
		aud += "#x5c/" + s.cfg.Provisioner
	}
	claims := struct {
		jwt.Claims
		SANs []string `json:"sans"`
	}{jwt.Claims{
		Issuer:    s.cfg.Provisioner,
		Subject:   sub,
		Audience:  jwt.Audience{aud},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(5 * time.Minute)),
		ID:        hex.EncodeToString(id),
	}, sans}

	opts := new(jose.SignerOptions).WithType("JWT")
	var key jose.SigningKey
	if s.cfg.X5CCertFile != "" {
		certs, signer, err := s.x5c()
		if err != nil {
			return "", err
		}
		x5c := make([]string, len(certs))
		for i, c := range certs {
			x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
		}
		opts = opts.WithHeader("x5c", x5c)
		alg, err := algFor(signer.Public())
		if err != nil {
			return "", err
		}
		key = jose.SigningKey{Algorithm: alg, Key: signer}
	} else {
		jwk, err := s.provisionerKey(ctx)
		if err != nil {
			return "", err
		}
		opts = opts.WithHeader("kid", jwk.KeyID)
		key = jose.SigningKey{Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Key: jwk.Key}
	}
	sig, err := jose.NewSigner(key, opts)
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

func algFor(pub crypto.PublicKey) (jose.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return jose.ES256, nil
		case 384:
			return jose.ES384, nil
		case 521:
			return jose.ES512, nil
		}
	case *rsa.PublicKey:
		return jose.RS256, nil
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("x5c key: unsupported key type %T", pub)
}

// x5c reads the x5c provisioner's certificate chain and key.
func (s *StepCA) x5c() ([]*x509.Certificate, crypto.Signer, error) {
	certs, err := pemfile.ReadCerts(s.cfg.X5CCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("x5c certificate file: %w", err)
	}
	signer, err := keys.ReadKeyFile(s.cfg.X5CKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("x5c key file: %w", err)
	}
	if !samePublicKey(certs[0].PublicKey, signer.Public()) {
		return nil, nil, fmt.Errorf("x5c key %s does not match certificate %s", s.cfg.X5CKeyFile, s.cfg.X5CCertFile)
	}
	if now := s.cfg.Now(); now.After(certs[0].NotAfter) {
		return nil, nil, fmt.Errorf("x5c certificate %s expired at %s", s.cfg.X5CCertFile, formatTime(certs[0].NotAfter))
	}
	return certs, signer, nil
}

// diagnoseX5C says why step-ca may have refused the x5c token, from the
// X5C provisioner's roots as step-ca lists them: no such provisioner, or a
// certificate that does not chain to its roots. nil: no reason found.
func (s *StepCA) diagnoseX5C(ctx context.Context) error {
	certs, _, err := s.x5c()
	if err != nil {
		return err
	}
	var found bool
	var roots []*x509.Certificate
	var rootsErr error
	err = s.eachProvisioner(ctx, func(p provisionerInfo) bool {
		if p.Name != s.cfg.Provisioner || !strings.EqualFold(p.Type, "X5C") {
			return true
		}
		found = true
		roots, rootsErr = pemfile.ParseCerts(p.Roots)
		return false
	})
	switch {
	case err != nil || rootsErr != nil:
		return nil
	case !found:
		return fmt.Errorf("step-ca has no X5C provisioner named %q", s.cfg.Provisioner)
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: s.cfg.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("x5c certificate %s (subject %q, issuer %q) does not chain to a root of X5C provisioner %q: %w",
			s.cfg.X5CCertFile, certs[0].Subject, certs[0].Issuer, s.cfg.Provisioner, err)
	}
	return nil
}

// provisionerInfo is what Sigil reads of step-ca's /provisioners list.
type provisionerInfo struct {
	Type         string `json:"type"`
	Name         string `json:"name"`
	EncryptedKey string `json:"encryptedKey"` // JWK
	Roots        []byte `json:"roots"`        // X5C: PEM, base64 in JSON
}

// eachProvisioner calls f with each of step-ca's provisioners, page by
// page, until f returns false.
func (s *StepCA) eachProvisioner(ctx context.Context, f func(provisionerInfo) bool) error {
	const pageLimit = 100
	cursor := ""
	for range 100 { // at most 10,000 provisioners
		var page struct {
			Provisioners []provisionerInfo `json:"provisioners"`
			NextCursor   string            `json:"nextCursor"`
		}
		path := fmt.Sprintf("/provisioners?limit=%d&cursor=%s", pageLimit, url.QueryEscape(cursor))
		if err := s.do(ctx, s.client, http.MethodGet, path, nil, &page); err != nil {
			return fmt.Errorf("list provisioners: %w", err)
		}
		for _, p := range page.Provisioners {
			if !f(p) {
				return nil
			}
		}
		if page.NextCursor == "" || len(page.Provisioners) == 0 {
			return nil
		}
		cursor = page.NextCursor
	}
	return nil
}

// provisionerKey returns the JWK provisioner's private key: from the key
// file, or its encryptedKey fetched from step-ca and decrypted.
func (s *StepCA) provisionerKey(ctx context.Context) (*jose.JSONWebKey, error) {
	s.mu.Lock()
	jwk := s.jwk
	s.mu.Unlock()
	if jwk != nil {
		return jwk, nil
	}
	pw, err := readPassword(s.cfg.PasswordFile)
	if err != nil {
		return nil, err
	}
	var key *jose.JSONWebKey
	var found bool
	var keyErr error
	if err := s.eachProvisioner(ctx, func(p provisionerInfo) bool {
		if p.Name != s.cfg.Provisioner || !strings.EqualFold(p.Type, "JWK") {
			return true
		}
		found = true
		if p.EncryptedKey == "" {
			keyErr = fmt.Errorf("provisioner %q has no encrypted key on step-ca: set the jwk key file", p.Name)
		} else if key, keyErr = decryptJWK(p.EncryptedKey, pw); keyErr != nil {
			keyErr = fmt.Errorf("provisioner %q key: %w", p.Name, keyErr)
		}
		return false
	}); err != nil {
		return nil, err
	}
	if keyErr != nil {
		return nil, keyErr
	}
	if found {
		s.mu.Lock()
		s.jwk = key
		s.mu.Unlock()
		return key, nil
	}
	return nil, fmt.Errorf("step-ca has no JWK provisioner named %q", s.cfg.Provisioner)
}

func readPassword(path string) ([]byte, error) {
	pw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	if pw = bytes.TrimRight(pw, "\r\n"); len(pw) == 0 {
		return nil, fmt.Errorf("password file %s is empty", path)
	}
	return pw, nil
}

// decryptJWK decrypts a provisioner key that step encrypted with a
// password (a JWE, PBES2 key wrapping, compact or JSON serialized) and
// checks that it is a private signing key.
func decryptJWK(jwe string, pw []byte) (*jose.JSONWebKey, error) {
	enc, err := jose.ParseEncrypted(strings.TrimSpace(jwe),
		[]jose.KeyAlgorithm{jose.PBES2_HS256_A128KW, jose.PBES2_HS384_A192KW, jose.PBES2_HS512_A256KW},
		[]jose.ContentEncryption{jose.A128GCM, jose.A192GCM, jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("not a password-encrypted key: %w", err)
	}
	raw, err := enc.Decrypt(pw)
	if err != nil {
		return nil, fmt.Errorf("decrypt (wrong password?): %w", err)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("decrypted key: %w", err)
	}
	if k.IsPublic() || !k.Valid() {
		return nil, errors.New("decrypted key is not a private key")
	}
	if k.Algorithm == "" {
		return nil, errors.New("decrypted key names no algorithm (alg)")
	}
	return &k, nil
}

// errUnauthorized marks a 401 answer of step-ca.
var errUnauthorized = errors.New("unauthorized")

// maxResponse bounds what is read from step-ca.
const maxResponse = 1 << 20

// do sends a JSON request (nil body: none) and decodes the JSON answer.
// step-ca's error messages are passed on, cut short.
func (s *StepCA) do(ctx context.Context, c *http.Client, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base.String()+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if len(data) > maxResponse {
		return fmt.Errorf("answer larger than %d bytes", maxResponse)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		var e struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			msg = e.Message
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		err := fmt.Errorf("%s %s: %s: %s", method, strings.SplitN(path, "?", 2)[0], resp.Status, msg)
		if resp.StatusCode == http.StatusUnauthorized {
			err = fmt.Errorf("%w: %w", errUnauthorized, err)
		}
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// record notes a request's outcome in Health, the metrics and the log.
func (s *StepCA) record(op string, err error) {
	now := s.cfg.Now()
	s.mu.Lock()
	h := &s.health
	wasDown := h.ConsecutiveFailures > 0
	if err == nil {
		h.LastSuccess, h.ConsecutiveFailures = now, 0
	} else {
		h.LastFailure, h.LastError = now, err.Error()
		h.ConsecutiveFailures++
	}
	failures := h.ConsecutiveFailures
	s.mu.Unlock()
	if err == nil {
		s.requests.WithLabelValues(op, "ok").Inc()
		s.up.Set(1)
		if wasDown {
			s.cfg.Logger.Info("step-ca upstream reachable again", "url", s.base.String())
		}
		return
	}
	s.requests.WithLabelValues(op, "error").Inc()
	s.up.Set(0)
	s.cfg.Logger.Warn("step-ca upstream request failed; the active key keeps signing",
		"url", s.base.String(), "op", op, "consecutive_failures", failures, "error", err)
}
