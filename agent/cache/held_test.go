package cache

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/clock"
)

// The cache keeps SVIDs unparsed: workloads get the same SVID back after
// the parsed form was collected, subscribers of one SVID share one parsed
// copy, and a snapshot carries the raw bytes that Restore takes back.
func TestHeldSVIDsParseOnDemandAndRoundTrip(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/a", "unix:uid:1"),
		ent("b", "spiffe://example.org/b", "unix:uid:2"),
	}, Bundles: []*typesv1.Bundle{bundlePB(t, "example.org", s.ca, 1)}})
	if _, err := c.MintDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	runtime.GC() // the parsed forms made at minting are held by no one
	sub1, sub2 := c.Subscribe(sels("unix:uid:1")), c.Subscribe(sels("unix:uid:1"))
	defer sub1.Close()
	defer sub2.Close()
	u1, u2 := latest(t, sub1), latest(t, sub2)
	if len(u1.Identities) != 1 || len(u2.Identities) != 1 || u1.Identities[0].SVID.ID.String() != "spiffe://example.org/a" {
		t.Fatalf("updates: %v / %v", ids(u1), ids(u2))
	}
	if u1.Identities[0].SVID != u2.Identities[0].SVID {
		t.Error("two subscribers of one SVID got two parsed copies")
	}
	leaf := u1.Identities[0].SVID.Certificates[0]

	snap := c.Snapshot()
	if len(snap.Raw) != 2 || len(snap.SVIDs) != 0 {
		t.Fatalf("snapshot: %d raw, %d parsed SVIDs; want 2 raw", len(snap.Raw), len(snap.SVIDs))
	}
	r, err := New(Config{TrustDomain: td, Client: s, Clock: clock.NewFake(clk.Now().Add(time.Minute)), Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	kept, dropped, err := r.Restore(snap)
	if err != nil || kept != 2 || dropped != 0 {
		t.Fatalf("restore: kept %d dropped %d: %v", kept, dropped, err)
	}
	sub := r.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	u := latest(t, sub)
	if len(u.Identities) != 1 || !u.Identities[0].SVID.Certificates[0].Equal(leaf) {
		t.Fatalf("restored: %v", ids(u))
	}

	// A damaged raw SVID is dropped, not restored.
	bad := r.Snapshot()
	bad.Raw["a"] = RawSVID{Chain: [][]byte{[]byte("junk")}, Key: bad.Raw["a"].Key}
	r2, _ := New(Config{TrustDomain: td, Client: s, Clock: clk, Rand: func() float64 { return 0.5 }})
	if kept, dropped, err := r2.Restore(bad); err != nil || kept != 1 || dropped != 1 {
		t.Fatalf("restore with a damaged SVID: kept %d dropped %d: %v", kept, dropped, err)
	}
}

// The kept key is PKCS#8 without the public key's copy for ECDSA, parses
// to the same key (by Go and by openssl), and other keys stay whole.
func TestCompactPKCS8(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		full, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		der, err := compactPKCS8(key)
		if err != nil {
			t.Fatal(err)
		}
		if len(der) >= len(full)-2*(curve.Params().BitSize+7)/8 {
			t.Errorf("%s: %d bytes, full PKCS#8 %d: the public key was kept", curve.Params().Name, len(der), len(full))
		}
		back, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatalf("%s: %v", curve.Params().Name, err)
		}
		if !key.Equal(back) {
			t.Fatalf("%s: parsed back to another key", curve.Params().Name)
		}
		out, err := exec.Command("openssl", "pkey", "-inform", "DER", "-in", writeTemp(t, der), "-pubout", "-outform", "DER").Output()
		if err != nil {
			t.Fatalf("%s: openssl pkey: %v (openssl is a Debian package: apt-get install openssl)", curve.Params().Name, err)
		}
		if pub, err := x509.MarshalPKIXPublicKey(key.Public()); err != nil || !bytes.Equal(out, pub) {
			t.Fatalf("%s: openssl derived another public key (%v)", curve.Params().Name, err)
		}
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := compactPKCS8(edKey)
	if err != nil {
		t.Fatal(err)
	}
	if full, _ := x509.MarshalPKCS8PrivateKey(edKey); !bytes.Equal(der, full) {
		t.Fatal("an Ed25519 key changed")
	}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.der")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
