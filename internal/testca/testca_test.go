package testca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/internal/testca"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestIssue(t *testing.T) {
	for _, depth := range []int{0, 1, 3} {
		t.Run(strings.Repeat("+", depth), func(t *testing.T) {
			ca := testca.New(t, td)
			if depth > 0 {
				ca = ca.Chain(t, depth)
			}
			svid := ca.Issue(t, "spiffe://example.org/ns/shop/sa/cart", testca.WithDNSNames("cart.shop"))
			if got, want := len(svid.Certificates), 2+depth; got != want {
				t.Fatalf("chain length %d, want %d", got, want)
			}
			certPEM, keyPEM, err := svid.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := x509svid.Parse(certPEM, keyPEM)
			if err != nil {
				t.Fatalf("go-spiffe refuses the SVID: %v", err)
			}
			if _, _, err := x509svid.Verify(parsed.Certificates, ca.Bundle()); err != nil {
				t.Fatalf("SVID does not verify against the bundle: %v", err)
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				t.Fatal(err)
			}
			leaf := svid.Certificates[0]
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.URIs) != 1 {
				t.Fatalf("leaf is not X509-SVID shaped: ca=%v ku=%v uris=%v", leaf.IsCA, leaf.KeyUsage, leaf.URIs)
			}
		})
	}
}

func TestNameConstraint(t *testing.T) {
	ca := testca.New(t, td).Chain(t, 2)
	// A leaf for another trust domain, signed by hand with ca's issuer key,
	// must be refused by the name constraint.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	evil, _ := url.Parse("spiffe://evil.org/x")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{evil},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificates()[0], key.Public(), ca.Signer())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range ca.Certificates() {
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: ca.RootPool(), Intermediates: inter})
	var cie x509.CertificateInvalidError
	if !errors.As(err, &cie) || cie.Reason != x509.CANotAuthorizedForThisName {
		t.Fatalf("got %v, want a name constraint violation", err)
	}
}

func TestExpired(t *testing.T) {
	past := time.Now().Add(-48 * time.Hour)
	ca := testca.New(t, td, testca.WithValidity(past, past.Add(time.Hour)))
	svid := ca.Issue(t, "spiffe://example.org/a", testca.WithValidity(past, past.Add(time.Minute)))
	_, _, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("got %v, want expired", err)
	}
}

func TestWritePEM(t *testing.T) {
	ca := testca.New(t, td).Chain(t, 1)
	f := ca.WritePEM(t, t.TempDir())
	fi, err := os.Stat(f.Key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	chain, err := os.ReadFile(f.Chain)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(chain), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("chain.pem holds %d certificates, want 2", n)
	}
	if _, err := tls.LoadX509KeyPair(f.Chain, f.Key); err != nil {
		t.Fatalf("chain and key do not match: %v", err)
	}
}
