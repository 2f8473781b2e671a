package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/clock"
)

func testRoot(t *testing.T, now time.Time, ca bool) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "root"}, NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(time.Hour), IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The roots the CA sends are persisted, reloaded by a new agent over the
// same data directory, trusted beside the configured bootstrap bundle
// while unexpired, replaced when the CA's set changes, and kept when the
// CA sends something that is not a set of CA certificates.
func TestLearnedBootstrapRoots(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := clock.NewFake(now)
	dir := t.TempDir()
	configured := testRoot(t, now, true)
	oldRoot, newRoot := testRoot(t, now, true), testRoot(t, now.Add(time.Second), true)
	mk := func() *Agent {
		a, err := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), ServerAddress: "127.0.0.1:1",
			DataDir: dir, BootstrapBundle: []*x509.Certificate{configured}, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.loadLearnedRoots(); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := mk()
	if got := a.bootstrapRoots(); len(got) != 1 || !got[0].Equal(configured) {
		t.Fatalf("before learning: %d roots, want the configured one", len(got))
	}
	a.learnRoots([][]byte{oldRoot.Raw, newRoot.Raw})
	a = mk()
	if got := a.bootstrapRoots(); len(got) != 3 || !got[1].Equal(oldRoot) || !got[2].Equal(newRoot) {
		t.Fatalf("after a restart: %d roots, want configured, old, new", len(got))
	}
	// The old root retired: the CA sends the new one alone.
	a.learnRoots([][]byte{newRoot.Raw})
	// Bad input keeps what was learned.
	a.learnRoots([][]byte{testRoot(t, now, false).Raw})
	a.learnRoots([][]byte{[]byte("garbage")})
	a = mk()
	if got := a.bootstrapRoots(); len(got) != 2 || !got[1].Equal(newRoot) {
		t.Fatalf("after the old root left: %d roots, want configured, new", len(got))
	}
	clk.Advance(2 * time.Hour)
	if got := a.bootstrapRoots(); len(got) != 1 {
		t.Fatalf("after the learned root expired: %d roots, want the configured one alone", len(got))
	}
	// A damaged file is an error that says what to do.
	if err := os.WriteFile(filepath.Join(dir, LearnedRootsFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), ServerAddress: "127.0.0.1:1", DataDir: dir, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.loadLearnedRoots(); err == nil {
		t.Fatal("a damaged learned roots file loaded")
	}
}
