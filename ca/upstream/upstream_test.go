package upstream_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/sigilid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// caTemplate is what the CA asks its upstream to sign.
func caTemplate(now time.Time, ttl time.Duration) *x509.Certificate {
	return &x509.Certificate{
		Subject:                     pkix.Name{Organization: []string{"Sigil"}, CommonName: "Sigil CA"},
		NotBefore:                   now,
		NotAfter:                    now.Add(ttl),
		IsCA:                        true,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		URIs:                        []*url.URL{sigilid.CA(td).URL()},
		PermittedURIDomains:         []string{td.Name()},
		PermittedDNSDomainsCritical: true,
	}
}

// issueLeaf signs an X509-SVID-shaped leaf with the CA key, as the CA would.
func issueLeaf(t testing.TB, ca *x509.Certificate, caKey crypto.Signer, now time.Time) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		NotBefore:             now,
		NotAfter:              now.Add(time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{spiffeid.RequireFromPath(td, "/ns/shop/sa/cart").URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// checkChain signs a Sigil CA with u, issues a leaf under it and verifies the
// leaf with crypto/x509, go-spiffe and openssl against u's roots.
func checkChain(t *testing.T, u upstream.Upstream, now time.Time, wantLen int) []*x509.Certificate {
	t.Helper()
	ctx := context.Background()
	caKey := newKey(t)
	chain, err := u.SignCA(ctx, caTemplate(now, 24*time.Hour), caKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != wantLen {
		t.Fatalf("SignCA returned %d certificates, want %d", len(chain), wantLen)
	}
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(caKey.Public()) {
		t.Fatal("signed certificate is not for the given key")
	}
	roots, err := u.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chain {
		for _, r := range roots {
			if c.Equal(r) {
				t.Fatal("SignCA's chain includes a root")
			}
		}
	}
	leaf := issueLeaf(t, chain[0], caKey, now)

	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, CurrentTime: now.Add(time.Minute)}); err != nil {
		t.Fatalf("crypto/x509: leaf does not verify: %v", err)
	}

	bundle := x509bundle.FromX509Authorities(td, roots)
	if _, _, err := x509svid.Verify(append([]*x509.Certificate{leaf}, chain...), bundle); err != nil {
		t.Fatalf("go-spiffe: leaf does not verify: %v", err)
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: install Debian's openssl")
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootsPEM := write("roots.pem", pemOf(roots...))
	chainPEM := write("chain.pem", pemOf(chain...))
	leafPEM := write("leaf.pem", pemOf(leaf))
	out, err := exec.Command(openssl, "verify", "-x509_strict", "-CAfile", rootsPEM, "-untrusted", chainPEM, leafPEM).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	return chain
}
