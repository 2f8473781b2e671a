package agent

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/agent/svidstore"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/sigilid"
)

var serialN atomic.Int64

// signed makes a certificate for pub from tmpl under parent.
func signed(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(serialN.Add(1))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pkiKey is a CA certificate and its key.
type pkiKey struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newRoot(t *testing.T, name string, now time.Time) pkiKey {
	k := p256(t)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return pkiKey{cert: signed(t, tmpl, tmpl, k.Public(), k), key: k}
}

// signingKey is a CA signing key (an intermediate) under root, valid until
// notAfter, as the CA's prepare makes it.
func (root pkiKey) signingKey(t *testing.T, name string, now, notAfter time.Time) pkiKey {
	k := p256(t)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	return pkiKey{cert: signed(t, tmpl, root.cert, k.Public(), root.key), key: k}
}

// serving is a TLS certificate chain for id signed by k, as the CA serves
// it (leaf, then the signing key's certificate), DER.
func (k pkiKey) serving(t *testing.T, id spiffeid.ID, now time.Time) [][]byte {
	leafKey := p256(t)
	tmpl := &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), URIs: []*url.URL{id.URL()},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	return [][]byte{signed(t, tmpl, k.cert, leafKey.Public(), k.key).Raw, k.cert.Raw}
}

// fallbacks reads sigil_agent_ca_trust_fallback_total from reg.
func fallbacks(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sigil_agent_ca_trust_fallback_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("sigil_agent_ca_trust_fallback_total is not registered")
	return 0
}

// The agent's check of the CA's certificate, in each case the brief of
// the fallback names: by the held bundle; by the bootstrap root when the
// bundle lacks the key (counted, logged once per key); refused through a
// revoked key, through a key expired by the agent's clock, to an unknown
// root, and for another SPIFFE ID, even though each chains to a root the
// agent trusts at attestation.
func TestVerifyCAFallsBackToBootstrapRootsSafely(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	caID := sigilid.CA(td)
	wall := time.Now()
	// The agent's clock runs 10 minutes ahead of the wall clock, so that
	// "expired by the agent's clock" differs from Go's check.
	clk := clock.NewFake(wall.Add(10 * time.Minute))
	root := newRoot(t, "upstream root", wall)
	k1 := root.signingKey(t, "K1 held", wall, wall.Add(24*time.Hour))
	k2 := root.signingKey(t, "K2 activated while the agent was away", wall, wall.Add(24*time.Hour))
	k3 := root.signingKey(t, "K3 revoked", wall, wall.Add(24*time.Hour))
	k4 := root.signingKey(t, "K4 expired by the agent's clock", wall, wall.Add(5*time.Minute))
	stranger := newRoot(t, "unknown root", wall).signingKey(t, "K under an unknown root", wall, wall.Add(24*time.Hour))

	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	a, err := New(Config{TrustDomain: td, ServerAddress: "127.0.0.1:1", DataDir: t.TempDir(),
		BootstrapBundle: []*x509.Certificate{root.cert}, Clock: clk, Metrics: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// The agent holds a bundle of K1 and K3 (its persisted identity's),
	// and knows K3 to be revoked.
	a.id = &svidstore.Identity{Bundle: []*x509.Certificate{k1.cert, k3.cert}}
	a.addRevokedKeys([]string{svidstore.KeyID(k3.cert)})

	for _, tc := range []struct {
		name     string
		chain    [][]byte
		wantErr  string // "" accepts
		fallback bool
	}{
		{name: "held key", chain: k1.serving(t, caID, wall)},
		{name: "new key under the bootstrap root", chain: k2.serving(t, caID, wall), fallback: true},
		{name: "new key again", chain: k2.serving(t, caID, wall), fallback: true},
		{name: "revoked key under the bootstrap root", chain: k3.serving(t, caID, wall), wantErr: "revoked CA key " + svidstore.KeyID(k3.cert)},
		{name: "key expired by the agent's clock", chain: k4.serving(t, caID, wall), wantErr: "expired"},
		{name: "unknown root", chain: stranger.serving(t, caID, wall), wantErr: "unknown authority"},
		{name: "new key, not the CA's ID", chain: k2.serving(t, spiffeid.RequireFromPath(td, "/web"), wall), wantErr: "unexpected ID"},
		{name: "garbage", chain: [][]byte{[]byte("junk")}, wantErr: "x509svid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fallbacks(t, reg)
			err := a.verifyCA(tc.chain, nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("verifyCA = %v, want an error containing %q", err, tc.wantErr)
			}
			got := fallbacks(t, reg) - before
			if want := map[bool]float64{true: 1}[tc.fallback]; got != want {
				t.Fatalf("sigil_agent_ca_trust_fallback_total grew by %v, want %v", got, want)
			}
		})
	}
	if n := strings.Count(logs.String(), "verified the CA by its bootstrap roots"); n != 1 || !strings.Contains(logs.String(), svidstore.KeyID(k2.cert)) {
		t.Fatalf("fallback logged %d times (want once, naming K2):\n%s", n, logs.String())
	}
	if got := fallbacks(t, reg); got != 2 {
		t.Fatalf("sigil_agent_ca_trust_fallback_total = %v, want 2", got)
	}
}
