package ca_test

import (
	"context"
	"crypto/x509"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// twoReplicas starts two CA replicas on one real PostgreSQL database, under
// the same existing PKI, on one fake clock.
func twoReplicas(t *testing.T) (a, b *ca.CA, st *sqlstore.Store, clk *clock.Fake) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.OpenPostgres(ctx, pgtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk = newClock()
	var shared env
	shared.clock = clk
	var cfg ca.Config
	existingPKI(t, clk.Now())(&shared, &cfg)
	replica := func(name string) *ca.CA {
		c, err := ca.New(ca.Config{TrustDomain: td, InstanceID: name, Store: st, Keys: keys.NewMemory(), Upstream: cfg.Upstream, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	return replica("a"), replica("b"), st, clk
}

// Two CA replicas share one PostgreSQL database and the same upstream PKI;
// each has its own signing keys. Both replicas' keys must stay in the one
// published bundle, so an SVID from either verifies everywhere.
func TestReplicasShareOneBundle(t *testing.T) {
	ctx := context.Background()
	a, b, st, clk := twoReplicas(t)
	kidA, kidB := keyIDs(t, a, ca.JWT, ca.Active)[0], keyIDs(t, b, ca.JWT, ca.Active)[0]
	if kidA == kidB {
		t.Fatal("replicas share a JWT key")
	}
	hasBoth := func(step string) {
		t.Helper()
		bundle, err := a.Bundle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bundle.HasJWTAuthority(kidA) || !bundle.HasJWTAuthority(kidB) {
			t.Fatalf("%s: bundle JWT keys %v, want both %s and %s", step, keysOf(bundle.JWTAuthorities()), kidA, kidB)
		}
	}
	hasBoth("after both started")
	if err := a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	hasBoth("after a tick of a")

	// A JWT-SVID minted by b validates against the bundle a serves.
	tok, err := b.MintJWTSVID(ctx, spiffeid.RequireFromString("spiffe://example.org/w"), ca.JWTParams{Audience: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := a.Bundle(ctx)
	if _, err := jwtsvid.ParseAndValidate(tok, bundle.JWTBundle(), []string{"x"}); err != nil {
		t.Fatalf("b's token does not validate against the shared bundle: %v", err)
	}
	// X509-SVIDs of both chain to the shared root.
	ea := &env{ca: a, clock: clk}
	eb := &env{ca: b, clock: clk}
	for name, e := range map[string]*env{"a": ea, "b": eb} {
		if err := ea.verify(t, e.sign(t, "spiffe://example.org/w"), clk.Now()); err != nil {
			t.Fatalf("svid of %s: %v", name, err)
		}
	}

	// A racing writer that drops b's key is repaired by b's next tick.
	stored, err := st.GetBundle(ctx, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range stored.JWTAuthorities {
		if k.KeyID == kidB {
			stored.JWTAuthorities = append(stored.JWTAuthorities[:i], stored.JWTAuthorities[i+1:]...)
			break
		}
	}
	stored.Sequence++
	if err := st.SetBundle(ctx, "test", stored); err != nil {
		t.Fatal(err)
	}
	if err := b.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	hasBoth("after b repaired the bundle")
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Two idle replicas on one PostgreSQL must agree that the bundle is
// unchanged: a minute of ticks of both (at the default 10 s rotation tick)
// leaves the sequence where it was, and one real change bumps it once
// across both replicas' ticks.
func TestIdleReplicasKeepBundleSequence(t *testing.T) {
	ctx := context.Background()
	a, b, st, clk := twoReplicas(t)
	sequence := func() uint64 {
		t.Helper()
		bundle, err := st.GetBundle(ctx, "example.org")
		if err != nil {
			t.Fatal(err)
		}
		return bundle.Sequence
	}
	tickBoth := func(n int) {
		t.Helper()
		for range n {
			clk.Advance(10 * time.Second)
			for _, c := range []*ca.CA{a, b} {
				if err := c.Rotate(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// One round lets both replicas see each other's keys.
	tickBoth(1)
	start := sequence()
	tickBoth(6)
	if got := sequence(); got != start {
		t.Fatalf("idle replicas moved the bundle sequence from %d to %d in a minute", start, got)
	}

	if _, err := a.Prepare(ctx, ca.JWT); err != nil {
		t.Fatal(err)
	}
	tickBoth(6)
	if got := sequence(); got != start+1 {
		t.Fatalf("one new key moved the bundle sequence from %d to %d, want %d", start, got, start+1)
	}
}

// crlListing returns the CRL among crls signed by issuer, and whether it
// lists serial.
func crlListing(t *testing.T, crls [][]byte, issuer *x509.Certificate, serial *big.Int) (found, lists bool) {
	t.Helper()
	for _, der := range crls {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if crl.CheckSignatureFrom(issuer) != nil {
			continue
		}
		found = true
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial) == 0 {
				lists = true
			}
		}
	}
	return found, lists
}

// An SVID signed by replica a and revoked through replica b: b's agents get
// a CRL signed by a's key listing it (a stores its CRLs, b forwards them),
// and a's agents get b's CRLs as well.
func TestReplicasServeEachOthersCRLs(t *testing.T) {
	ctx := context.Background()
	a, b, _, _ := twoReplicas(t)
	sign := func(c *ca.CA, id string) *ca.X509SVID {
		csr, err := ca.ParseCSR(makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{uri(id)}}), td)
		if err != nil {
			t.Fatal(err)
		}
		svid, err := c.SignX509SVID(ctx, csr, ca.SVIDParams{})
		if err != nil {
			t.Fatal(err)
		}
		return svid
	}
	byA, byB := sign(a, "spiffe://example.org/by-a"), sign(b, "spiffe://example.org/by-b")
	issuerA, issuerB := byA.Certificates[1], byB.Certificates[1]
	// Both replicas publish; each then sees the other's keys in the bundle.
	for _, c := range []*ca.CA{a, b, a} {
		if err := c.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if found, _ := crlListing(t, b.CRLs(), issuerA, byA.Certificates[0].SerialNumber); !found {
		t.Fatal("replica b serves no CRL of a's key")
	}
	if found, _ := crlListing(t, a.CRLs(), issuerB, byB.Certificates[0].SerialNumber); !found {
		t.Fatal("replica a serves no CRL of b's key")
	}
	if err := b.RevokeSVID(ctx, "admin", byA.Certificates[0].SerialNumber.Text(16), ""); err != nil {
		t.Fatal(err)
	}
	if _, lists := crlListing(t, b.CRLs(), issuerA, byA.Certificates[0].SerialNumber); lists {
		t.Fatal("b serves a's CRL listing the serial before a re-signed it: the test shows nothing")
	}
	// a's revocation poll re-signs; b's next poll forwards it.
	for _, c := range []*ca.CA{a, b} {
		if err := c.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, lists := crlListing(t, b.CRLs(), issuerA, byA.Certificates[0].SerialNumber); !lists {
		t.Fatal("replica b's agents get no CRL of a's key listing the SVID revoked through b")
	}
	if _, lists := crlListing(t, a.CRLs(), issuerA, byA.Certificates[0].SerialNumber); !lists {
		t.Fatal("replica a's own CRL does not list it")
	}
	if n := len(b.CRLs()); n != 2 {
		t.Fatalf("b serves %d CRLs, want 2 (its key and a's)", n)
	}
}
