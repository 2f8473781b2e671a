package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/hsmtest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newClock() *clock.Fake { return clock.NewFake(time.Now().UTC().Truncate(time.Second)) }

type env struct {
	ca    *ca.CA
	clock *clock.Fake
	store *sqlstore.Store
	keys  ca.KeyManager
	up    ca.Upstream
	dir   string
}

type envOpt func(*env, *ca.Config)

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := keys.NewDisk(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{clock: newClock(), store: st, keys: km, dir: dir}
	cfg := ca.Config{TrustDomain: td, Store: st, Keys: km, Now: e.clock.Now}
	for _, o := range opts {
		o(e, &cfg)
	}
	if cfg.Upstream == nil {
		up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: cfg.Keys, KeyType: keys.ECP256, CertPath: filepath.Join(dir, "root.crt"), Now: e.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Upstream = up
	}
	e.up, e.keys = cfg.Upstream, cfg.Keys
	c, err := ca.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	e.ca = c
	return e
}

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func uri(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func (e *env) sign(t testing.TB, id string) *ca.X509SVID {
	t.Helper()
	csr, err := ca.ParseCSR(makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{uri(id)}}), td)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := e.ca.SignX509SVID(context.Background(), csr, ca.SVIDParams{})
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// verify checks an SVID with go-spiffe against the bundle the CA publishes
// in the store, at the given time.
func (e *env) verify(t testing.TB, svid *ca.X509SVID, at time.Time) error {
	t.Helper()
	b, err := e.ca.Bundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		raw[i] = c.Raw
	}
	_, _, err = x509svid.ParseAndVerify(raw, b.X509Bundle(), x509svid.WithTime(at))
	return err
}

func writePEM(t testing.TB, path string, certs ...*x509.Certificate) {
	t.Helper()
	var buf []byte
	for _, c := range certs {
		buf = append(buf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// opensslVerify runs `openssl verify` on the SVID with the bundle's
// authorities and wants it to pass.
func (e *env) opensslVerify(t testing.TB, svid *ca.X509SVID) {
	t.Helper()
	if out, err := e.opensslCheck(t, svid); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// opensslCheck runs `openssl verify -partial_chain` on the SVID with the
// bundle's X.509 authorities as the CA file. The authorities are the CA
// signing certificates, not a self-signed root, so openssl needs
// -partial_chain to take them as trust anchors (as Go and Envoy do).
func (e *env) opensslCheck(t testing.TB, svid *ca.X509SVID) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: run hack/test.sh or apt-get install openssl")
	}
	b, err := e.ca.Bundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, "roots.pem"), b.X509Authorities()...)
	writePEM(t, filepath.Join(dir, "chain.pem"), svid.Certificates[1:]...)
	writePEM(t, filepath.Join(dir, "leaf.pem"), svid.Certificates[0])
	out, err := exec.Command("openssl", "verify", "-partial_chain", "-purpose", "sslclient", "-CAfile", filepath.Join(dir, "roots.pem"),
		"-untrusted", filepath.Join(dir, "chain.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput()
	if err == nil && !strings.Contains(string(out), ": OK") {
		err = errors.New("no OK in the output")
	}
	return string(out), err
}

// existingPKI makes a two-level PKI (root → issuing intermediate) on disk,
// as a user's enterprise PKI would be, and returns a disk upstream over it.
func existingPKI(t testing.TB, now time.Time) envOpt {
	return func(e *env, cfg *ca.Config) {
		dir := t.TempDir()
		rootKey, interKey := ecKey(t), ecKey(t)
		rootTmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "Corp Root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		root, _ := x509.ParseCertificate(rootDER)
		interTmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "Corp Issuing CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(2 * 365 * 24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		inter, _ := x509.ParseCertificate(interDER)
		writePEM(t, filepath.Join(dir, "issuing.crt"), inter)
		writePEM(t, filepath.Join(dir, "root.crt"), root)
		keyDER, _ := x509.MarshalPKCS8PrivateKey(interKey)
		if err := os.WriteFile(filepath.Join(dir, "issuing.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			t.Fatal(err)
		}
		up, err := upstream.NewDisk(upstream.DiskConfig{CertFile: filepath.Join(dir, "issuing.crt"), KeyFile: filepath.Join(dir, "issuing.key"), BundleFile: filepath.Join(dir, "root.crt"), Now: e.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Upstream = up
	}
}

func bigOne() *big.Int { return newSerial() }

func withPKCS11(t testing.TB) envOpt {
	return func(e *env, cfg *ca.Config) {
		km, err := keys.NewPKCS11(context.Background(), keys.PKCS11Config{URI: hsmtest.Token(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { km.Close() })
		cfg.Keys = km
	}
}

func TestSVIDsVerifyForEveryUpstreamAndKeyManager(t *testing.T) {
	tests := []struct {
		name string
		opts func(t *testing.T) []envOpt
	}{
		{"self-signed root, disk keys", func(t *testing.T) []envOpt { return nil }},
		{"existing two-level PKI on disk", func(t *testing.T) []envOpt { return []envOpt{existingPKI(t, time.Now())} }},
		{"self-signed root, PKCS#11 keys in SoftHSM2", func(t *testing.T) []envOpt { return []envOpt{withPKCS11(t)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts(t)...)
			svid := e.sign(t, "spiffe://example.org/ns/shop/sa/cart")
			if err := e.verify(t, svid, e.clock.Now()); err != nil {
				t.Fatalf("go-spiffe ParseAndVerify: %v", err)
			}
			e.opensslVerify(t, svid)
			leaf := svid.Certificates[0]
			if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || len(leaf.URIs) != 1 {
				t.Fatalf("leaf is not an X509-SVID: ca=%v usage=%v uris=%v", leaf.IsCA, leaf.KeyUsage, leaf.URIs)
			}
			if got := leaf.NotAfter.Sub(e.clock.Now()); got != ca.DefaultX509SVIDTTL {
				t.Fatalf("ttl = %s, want %s", got, ca.DefaultX509SVIDTTL)
			}
			caCert := svid.Certificates[1]
			if len(caCert.PermittedURIDomains) != 1 || caCert.PermittedURIDomains[0] != "example.org" {
				t.Fatalf("signing CA name constraint = %v, want [example.org]", caCert.PermittedURIDomains)
			}
		})
	}
}

func TestParseCSRRefusesBadInput(t *testing.T) {
	good := &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://example.org/w")}}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	bcCA, _ := asn1.Marshal(struct{ IsCA bool }{true})
	broken := makeCSR(t, ecKey(t), good)
	broken[len(broken)-3] ^= 0xff // inside the signature
	tests := []struct {
		name    string
		der     []byte
		wantErr string
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte("not a csr"), "invalid csr"},
		{"broken signature", broken, "signature"},
		{"asks to be a CA", makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: good.URIs, ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bcCA}}}), "CA=true"},
		{"two URI SANs", makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://example.org/a"), uri("spiffe://example.org/b")}}), "exactly one URI SAN"},
		{"no URI SAN", makeCSR(t, ecKey(t), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}), "exactly one URI SAN"},
		{"foreign trust domain", makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://evil.org/w")}}), "not in trust domain"},
		{"not a SPIFFE ID", makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{uri("https://example.org/w")}}), "not a SPIFFE ID"},
		{"RSA-1024", makeCSR(t, rsa1024, good), "RSA key of 1024 bits"},
		{"IP SAN", makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: good.URIs, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}), "IP and email"},
		{"too large", make([]byte, ca.MaxCSRSize+1), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.ParseCSR(tt.der, td)
			if err == nil || !errors.Is(err, ca.ErrInvalidCSR) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseCSR error = %v, want ErrInvalidCSR containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSignRefusesDNSNamesNotInEntry(t *testing.T) {
	e := newEnv(t)
	csr, err := ca.ParseCSR(makeCSR(t, ecKey(t), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://example.org/w")}, DNSNames: []string{"evil.example.com"}}), td)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ca.SignX509SVID(context.Background(), csr, ca.SVIDParams{DNSNames: []string{"web.example.com"}}); err == nil || !strings.Contains(err.Error(), "evil.example.com") {
		t.Fatalf("err = %v, want refusal naming the DNS name", err)
	}
}

func keyIDs(t testing.TB, c *ca.CA, kind ca.KeyKind, state ca.KeyState) []string {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range st.Keys {
		if k.Kind == kind && k.State == state {
			out = append(out, k.ID)
		}
	}
	return out
}

func TestRotationOnAFakeClock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first := keyIDs(t, e.ca, ca.X509, ca.Active)
	firstJWT := keyIDs(t, e.ca, ca.JWT, ca.Active)
	if len(first) != 1 || len(firstJWT) != 1 {
		t.Fatalf("after init: active x509 %v, jwt %v; want one each", first, firstJWT)
	}
	var svids []*ca.X509SVID
	check := func(step string) {
		t.Helper()
		for i, s := range svids {
			if now := e.clock.Now(); now.Before(s.Certificates[0].NotAfter) {
				if err := e.verify(t, s, now); err != nil {
					t.Fatalf("%s: svid %d no longer verifies: %v", step, i, err)
				}
			}
		}
	}
	svids = append(svids, e.sign(t, "spiffe://example.org/a"))

	// Before half life nothing changes.
	e.clock.Advance(11 * time.Hour)
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keyIDs(t, e.ca, ca.X509, ca.Prepared); len(got) != 0 {
		t.Fatalf("prepared before half life: %v", got)
	}
	// At half life the next keys are prepared and published.
	e.clock.Advance(time.Hour + time.Minute)
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	prepared := keyIDs(t, e.ca, ca.X509, ca.Prepared)
	preparedJWT := keyIDs(t, e.ca, ca.JWT, ca.Prepared)
	if len(prepared) != 1 || len(preparedJWT) != 1 {
		t.Fatalf("at half life: prepared x509 %v jwt %v, want one each", prepared, preparedJWT)
	}
	b, err := e.ca.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !b.HasJWTAuthority(preparedJWT[0]) {
		t.Fatal("prepared JWT key is not in the bundle before it signs anything")
	}
	s := e.sign(t, "spiffe://example.org/b")
	if s.CAKeyID != first[0] {
		t.Fatalf("prepared key signed before activation")
	}
	svids = append(svids, s)
	check("after prepare")

	// At 5/6 of life the prepared key becomes active.
	e.clock.Advance(8 * time.Hour)
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keyIDs(t, e.ca, ca.X509, ca.Active); len(got) != 1 || got[0] != prepared[0] {
		t.Fatalf("after 5/6: active %v, want %v", got, prepared)
	}
	if got := keyIDs(t, e.ca, ca.X509, ca.Old); len(got) != 1 || got[0] != first[0] {
		t.Fatalf("after 5/6: old %v, want %v", got, first)
	}
	s = e.sign(t, "spiffe://example.org/c")
	if s.CAKeyID != prepared[0] {
		t.Fatalf("svid signed by %s, want the newly active %s", s.CAKeyID, prepared[0])
	}
	svids = append(svids, s)
	check("after activate")

	// Past the first key's expiry it is retired from the journal, and
	// everything signed since still verifies.
	e.clock.Advance(5 * time.Hour)
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keyIDs(t, e.ca, ca.X509, ca.Old); len(got) != 0 {
		t.Fatalf("expired old key still in journal: %v", got)
	}
	svids = append(svids, e.sign(t, "spiffe://example.org/d"))
	check("after retire")
	b, err = e.ca.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.HasJWTAuthority(firstJWT[0]) {
		t.Fatal("expired JWT key still published")
	}
}

func TestCADownPastExpiryStartsAFreshKey(t *testing.T) {
	e := newEnv(t)
	first := keyIDs(t, e.ca, ca.X509, ca.Active)
	e.clock.Advance(30 * time.Hour)
	if err := e.ca.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := keyIDs(t, e.ca, ca.X509, ca.Active)
	if len(now) != 1 || now[0] == first[0] {
		t.Fatalf("active after long downtime = %v, want a new key (old %v)", now, first)
	}
	if err := e.verify(t, e.sign(t, "spiffe://example.org/x"), e.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsKeysAndBundle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before, _ := e.ca.Status(ctx)
	b1, _ := e.ca.Bundle(ctx)
	svid := e.sign(t, "spiffe://example.org/w")

	again, err := ca.New(ca.Config{TrustDomain: td, Store: e.store, Keys: e.keys, Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Init(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := again.Status(ctx)
	if len(before.Keys) != len(after.Keys) {
		t.Fatalf("keys before %v after %v", before.Keys, after.Keys)
	}
	for i := range before.Keys {
		if before.Keys[i].ID != after.Keys[i].ID || before.Keys[i].State != after.Keys[i].State {
			t.Fatalf("key %d changed across restart: %+v → %+v", i, before.Keys[i], after.Keys[i])
		}
	}
	b2, _ := again.Bundle(ctx)
	s1, _ := b1.SequenceNumber()
	s2, _ := b2.SequenceNumber()
	if !b1.Equal(b2) || s1 != s2 {
		t.Fatalf("bundle changed across restart (sequence %d → %d)", s1, s2)
	}
	if err := e.verify(t, svid, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestForcedRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	active := keyIDs(t, e.ca, ca.X509, ca.Active)[0]
	if _, err := e.ca.Activate(ctx, ca.X509); !errors.Is(err, ca.ErrNoPrepared) {
		t.Fatalf("activate without prepared: %v", err)
	}
	if err := e.ca.Taint(ctx, ca.X509, active); !errors.Is(err, ca.ErrKeyActive) {
		t.Fatalf("taint active: %v", err)
	}
	if err := e.ca.Revoke(ctx, ca.X509, active); !errors.Is(err, ca.ErrNotTainted) {
		t.Fatalf("revoke untainted: %v", err)
	}
	if err := e.ca.Taint(ctx, ca.X509, "nope"); !errors.Is(err, ca.ErrKeyNotFound) {
		t.Fatalf("taint unknown: %v", err)
	}
	if _, err := e.ca.Prepare(ctx, "rsa"); err == nil {
		t.Fatal("prepare of unknown kind accepted")
	}
	old := e.sign(t, "spiffe://example.org/w")
	ks, err := e.ca.Prepare(ctx, ca.X509)
	if err != nil || ks.State != ca.Prepared {
		t.Fatalf("prepare: %+v %v", ks, err)
	}
	ks, err = e.ca.Activate(ctx, ca.X509)
	if err != nil || ks.State != ca.Active {
		t.Fatalf("activate: %+v %v", ks, err)
	}
	if err := e.ca.Taint(ctx, ca.X509, active); err != nil {
		t.Fatal(err)
	}
	tainted, _ := e.ca.TaintedX509()
	if len(tainted) != 1 || tainted[0] != active {
		t.Fatalf("tainted = %v", tainted)
	}
	if svid, _ := e.ca.GetX509SVID(); svid.Certificates[1].Equal(old.Certificates[1]) {
		t.Fatal("CA server identity still signed by the tainted key")
	}
	if err := e.ca.Revoke(ctx, ca.X509, active); err != nil {
		t.Fatal(err)
	}
	if _, revoked := e.ca.TaintedX509(); len(revoked) != 1 || revoked[0] != active {
		t.Fatalf("revoked = %v", revoked)
	}
	// The JWT key: revoking removes it from the bundle.
	jwtOld := keyIDs(t, e.ca, ca.JWT, ca.Active)[0]
	if _, err := e.ca.Prepare(ctx, ca.JWT); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ca.Activate(ctx, ca.JWT); err != nil {
		t.Fatal(err)
	}
	if err := e.ca.Taint(ctx, ca.JWT, jwtOld); err != nil {
		t.Fatal(err)
	}
	if err := e.ca.Revoke(ctx, ca.JWT, jwtOld); err != nil {
		t.Fatal(err)
	}
	b, _ := e.ca.Bundle(ctx)
	if b.HasJWTAuthority(jwtOld) {
		t.Fatal("revoked JWT key still in bundle")
	}
	events, err := e.store.ListAudit(ctx, storeAllAudit())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range events {
		seen[ev.Action] = true
	}
	for _, want := range []string{"ca.prepare", "ca.activate", "ca.taint", "ca.revoke"} {
		if !seen[want] {
			t.Errorf("no %s audit event (have %v)", want, seen)
		}
	}
}

func TestMintJWTSVID(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/w")
	tok, err := e.ca.MintJWTSVID(ctx, id, ca.JWTParams{Audience: []string{"db"}, WithJTI: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.ca.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, b.JWTBundle(), []string{"db"})
	if err != nil {
		t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
	}
	if svid.ID != id || svid.Claims["jti"] == nil {
		t.Fatalf("claims: %v", svid.Claims)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, b.JWTBundle(), []string{"other"}); err == nil {
		t.Fatal("token accepted for the wrong audience")
	}
	for name, p := range map[string]ca.JWTParams{"no audience": {}, "empty audience": {Audience: []string{""}}} {
		if _, err := e.ca.MintJWTSVID(ctx, id, p); err == nil {
			t.Errorf("%s: minted", name)
		}
	}
	if _, err := e.ca.MintJWTSVID(ctx, spiffeid.RequireFromString("spiffe://other.org/w"), ca.JWTParams{Audience: []string{"db"}}); err == nil {
		t.Error("minted for a foreign trust domain")
	}
}

func TestExpiredSVIDDoesNotVerify(t *testing.T) {
	e := newEnv(t)
	svid := e.sign(t, "spiffe://example.org/w")
	if err := e.verify(t, svid, svid.Certificates[0].NotAfter.Add(time.Second)); err == nil {
		t.Fatal("expired SVID verified")
	}
}

func TestForgedSVIDFromAnotherCADoesNotVerify(t *testing.T) {
	e := newEnv(t)
	other := newEnv(t)
	forged := other.sign(t, "spiffe://example.org/w")
	if err := e.verify(t, forged, e.clock.Now()); err == nil {
		t.Fatal("SVID from a foreign CA with our trust domain name verified against our bundle")
	}
}

func FuzzParseCSR(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://example.org/w")}}, k)
	f.Add(good)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ca.ParseCSR(der, td)
		if err != nil {
			if !errors.Is(err, ca.ErrInvalidCSR) {
				t.Fatalf("error does not wrap ErrInvalidCSR: %v", err)
			}
			return
		}
		if !csr.ID.MemberOf(td) {
			t.Fatalf("accepted foreign ID %s", csr.ID)
		}
	})
}

var _ x509bundle.Source = (*x509bundle.Bundle)(nil)
