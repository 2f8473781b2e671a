package ca_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
)

// forge signs a fresh leaf for id with the signing key held outside the CA
// (an attacker's copy of a key file) under the CA certificate chain.
func forge(t testing.TB, chain []*x509.Certificate, sign func(tmpl *x509.Certificate) ([]byte, error)) (*ca.X509SVID, error) {
	t.Helper()
	der, err := sign(&x509.Certificate{
		SerialNumber:          newSerial(),
		URIs:                  []*url.URL{uri("spiffe://example.org/forged")},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	})
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca.X509SVID{Certificates: append([]*x509.Certificate{leaf}, chain...)}, nil
}

// The attack of issue 10: prepare, activate, taint and revoke K1. An SVID K1
// signed before, and a leaf freshly minted with a copy of K1's key file,
// must then fail go-spiffe and openssl against the published bundle; K1
// must be gone from the bundle and from the key manager.
func TestRevokedKeyIsRefusedAndDestroyed(t *testing.T) {
	tests := []struct {
		name string
		opts func(t *testing.T) []envOpt
	}{
		{"disk keys", func(t *testing.T) []envOpt { return nil }},
		{"existing two-level PKI on disk", func(t *testing.T) []envOpt { return []envOpt{existingPKI(t, time.Now())} }},
		{"keys in SoftHSM2 over PKCS11", func(t *testing.T) []envOpt { return []envOpt{withPKCS11(t)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, tt.opts(t)...)
			k1 := keyIDs(t, e.ca, ca.X509, ca.Active)[0]
			kept := e.sign(t, "spiffe://example.org/w")
			k1Cert := kept.Certificates[1]
			// The attacker's copy of K1's key, taken while it existed.
			stolen, err := e.keys.Signer(ctx, "x509-1")
			if err != nil {
				t.Fatal(err)
			}
			if !publicEqual(stolen.Public(), k1Cert.PublicKey) {
				t.Fatal("key x509-1 is not K1")
			}
			var keyFile []byte
			if d, ok := e.keys.(*keys.Disk); ok {
				p, _ := d.Path("x509-1")
				if keyFile, err = os.ReadFile(p); err != nil {
					t.Fatal(err)
				}
			}
			forgeK1 := func() (*ca.X509SVID, error) {
				return forge(t, kept.Certificates[1:], func(tmpl *x509.Certificate) ([]byte, error) {
					return x509.CreateCertificate(rand.Reader, tmpl, k1Cert, ecKey(t).Public(), stolen)
				})
			}
			// Before: both verify, and the bundle holds K1, not the root.
			if err := e.verify(t, kept, e.clock.Now()); err != nil {
				t.Fatalf("K1 SVID before revoke: %v", err)
			}
			forged, err := forgeK1()
			if err != nil {
				t.Fatal(err)
			}
			if err := e.verify(t, forged, e.clock.Now()); err != nil {
				t.Fatalf("K1-minted leaf before revoke: %v", err)
			}
			roots, _ := e.up.Roots(ctx)
			b, _ := e.ca.Bundle(ctx)
			if !b.HasX509Authority(k1Cert) || b.HasX509Authority(roots[0]) {
				t.Fatalf("bundle authorities are not the CA keys: %d authorities", len(b.X509Authorities()))
			}

			if _, err := e.ca.Prepare(ctx, ca.X509); err != nil {
				t.Fatal(err)
			}
			if _, err := e.ca.Activate(ctx, ca.X509); err != nil {
				t.Fatal(err)
			}
			if err := e.ca.Taint(ctx, ca.X509, k1); err != nil {
				t.Fatal(err)
			}
			// Tainted is not revoked: still trusted while agents re-mint.
			if err := e.verify(t, kept, e.clock.Now()); err != nil {
				t.Fatalf("K1 SVID after taint: %v", err)
			}
			if err := e.ca.Revoke(ctx, ca.X509, k1); err != nil {
				t.Fatal(err)
			}

			b, _ = e.ca.Bundle(ctx)
			if b.HasX509Authority(k1Cert) {
				t.Fatal("revoked K1 still in the bundle")
			}
			if err := e.verify(t, kept, e.clock.Now()); err == nil {
				t.Fatal("go-spiffe accepts an SVID of the revoked key")
			}
			if out, err := e.opensslCheck(t, kept); err == nil {
				t.Fatalf("openssl verify -partial_chain accepts an SVID of the revoked key:\n%s", out)
			}
			// A copy of a key file still signs (it is the attacker's now), but
			// what it signs is refused; an HSM object is gone and signs nothing.
			switch forged, err := forgeK1(); {
			case err != nil && keyFile != nil:
				t.Fatalf("the copied key file no longer signs: %v", err)
			case err == nil && keyFile == nil:
				t.Fatal("the HSM still signs with the revoked key")
			case err == nil:
				if err := e.verify(t, forged, e.clock.Now()); err == nil {
					t.Fatal("go-spiffe accepts a leaf minted with the revoked key")
				}
			}
			auth, err := e.ca.X509Authorities(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range auth {
				if a.Equal(k1Cert) {
					t.Fatal("the CA's mTLS authorities still hold K1")
				}
			}
			// Destroyed: the key manager no longer has it; the file is gone.
			if _, err := e.keys.Signer(ctx, "x509-1"); !errors.Is(err, keys.ErrNotFound) {
				t.Fatalf("K1 still in the key manager: %v", err)
			}
			if keyFile != nil {
				p, _ := e.keys.(*keys.Disk).Path("x509-1")
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("K1's key file still on disk: %v", err)
				}
			}
			// The new key's SVIDs verify, by go-spiffe and openssl.
			fresh := e.sign(t, "spiffe://example.org/w")
			if err := e.verify(t, fresh, e.clock.Now()); err != nil {
				t.Fatal(err)
			}
			e.opensslVerify(t, fresh)
			// A restart loads without the destroyed key.
			again, err := ca.New(ca.Config{TrustDomain: td, Store: e.store, Keys: e.keys, Upstream: e.up, Now: e.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			if err := again.Init(ctx); err != nil {
				t.Fatalf("restart after revoke: %v", err)
			}
		})
	}
}

// A stale bundle that still holds a revoked key (another replica's write
// racing ours) or the upstream root (a bundle from before keys became the
// authorities) is cleaned at the next publish.
func TestPublishDropsRevokedKeysAndRootsFromTheStoredBundle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	k1 := keyIDs(t, e.ca, ca.X509, ca.Active)[0]
	k1Cert := e.sign(t, "spiffe://example.org/w").Certificates[1]
	if _, err := e.ca.Prepare(ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ca.Activate(ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if err := e.ca.Taint(ctx, ca.X509, k1); err != nil {
		t.Fatal(err)
	}
	if err := e.ca.Revoke(ctx, ca.X509, k1); err != nil {
		t.Fatal(err)
	}
	// Another CA replica's own key must survive the clean-up.
	other := newEnv(t)
	otherCert := other.sign(t, "spiffe://example.org/o").Certificates[1]
	roots, _ := e.up.Roots(ctx)
	sb, err := e.store.GetBundle(ctx, td.Name())
	if err != nil {
		t.Fatal(err)
	}
	sb.X509Authorities = append(sb.X509Authorities, k1Cert.Raw, roots[0].Raw, otherCert.Raw)
	sb.Sequence++
	if err := e.store.SetBundle(ctx, "test", sb); err != nil {
		t.Fatal(err)
	}
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := e.ca.Bundle(ctx)
	if b.HasX509Authority(k1Cert) || b.HasX509Authority(roots[0]) {
		t.Fatal("the revoked key or the root came back into the bundle")
	}
	if !b.HasX509Authority(otherCert) {
		t.Fatal("another replica's key was dropped")
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(x crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
