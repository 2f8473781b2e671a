package nodeapi_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	agentattest "github.com/sigilhq/sigil/agent/nodeattest"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/nodeapi"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/server"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
)

var (
	td     = spiffeid.RequireTrustDomainFromString("example.org")
	corpTD = spiffeid.RequireTrustDomainFromString("corp.example")
	caID   = spiffeid.RequireFromString("spiffe://example.org/sigil/ca")
)

type env struct {
	ctx   context.Context
	clock *clock.Fake // the CA's and node API's time; TLS stacks check certificates against real time
	store *sqlstore.Store
	ca    *ca.CA
	srv   *nodeapi.Server
	reg   *prometheus.Registry
	addr  string
	roots []*x509.Certificate
	pki   *testca.CA // the x509pop roots ("an existing PKI")
}

// newEnv runs a real CA (in-memory keys, self-signed root) over a real
// SQLite store, and the node API on 127.0.0.1 over TLS with the same
// settings as ca/server, with Run watching for changes.
func newEnv(t testing.TB, opts ...func(*nodeapi.Config)) *env {
	t.Helper()
	clk := clock.NewFake(time.Now())
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sigil.db"), sqlstore.WithClock(clk.Now))
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvOn(t, st, clk, opts...)
}

// newEnvOn is newEnv over st, whose clock is clk.
func newEnvOn(t testing.TB, st *sqlstore.Store, clk *clock.Fake, opts ...func(*nodeapi.Config)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	km := keys.NewMemory()
	up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: filepath.Join(dir, "root.crt"), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.New(ca.Config{TrustDomain: td, Store: st, Keys: km, Upstream: up, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	roots, err := c.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pki := testca.New(t, corpTD)
	jt, err := nodeattest.NewJoinToken(td, st, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	xp, err := nodeattest.NewX509PoP(nodeattest.X509PoPConfig{TrustDomain: td, Roots: pki.Roots(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := nodeapi.Config{
		TrustDomain:  td,
		Store:        st,
		CA:           c,
		Attestors:    []nodeattest.Attestor{jt, xp},
		Now:          clk.Now,
		PollInterval: 50 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics:      reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := nodeapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(credentials.NewTLS(serverTLS(c))))...)
	srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &env{ctx: ctx, clock: clk, store: st, ca: c, srv: srv, reg: reg, addr: lis.Addr().String(), roots: roots, pki: pki}
}

// serverTLS is ca/server's own TLS configuration over the CA.
func serverTLS(c *ca.CA) *tls.Config { return server.TLSConfig(context.Background(), c) }

// dial connects to the node API, verifying the CA by its SPIFFE ID against
// the bundle, presenting svid when it is not nil.
func (e *env) dial(t testing.TB, svid *x509svid.SVID) nodev1.NodeClient {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(td, e.roots)
	tc := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(caID))
	if svid != nil {
		tc = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(caID))
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return nodev1.NewNodeClient(conn)
}

type agent struct {
	id     string
	svid   *x509svid.SVID
	client nodev1.NodeClient
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csr makes a DER CSR with key for uris (none for an agent CSR).
func csr(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// attest runs attestation with a; it returns the Attest error as is.
func (e *env) attest(t testing.TB, a agentattest.Attestor) (*agent, error) {
	t.Helper()
	key := newKey(t)
	out, err := agentattest.Attest(e.ctx, e.dial(t, nil), a, csr(t, key, "spiffe://example.org/ignored"))
	if err != nil {
		return nil, err
	}
	svid, err := svidFrom(out.GetCertChain(), key)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != out.GetSpiffeId() {
		t.Fatalf("svid for %s, response says %s", svid.ID, out.GetSpiffeId())
	}
	return &agent{id: out.GetSpiffeId(), svid: svid, client: e.dial(t, svid)}, nil
}

func svidFrom(chain [][]byte, key crypto.Signer) (*x509svid.SVID, error) {
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		certs[i] = c
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// token makes a join token valid for ttl.
func (e *env) token(t testing.TB, ttl time.Duration) string {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	if err := e.store.CreateJoinToken(e.ctx, "test", store.JoinToken{Token: tok, ExpiresAt: e.clock.Now().Add(ttl)}); err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *env) joinAgent(t testing.TB) *agent {
	t.Helper()
	a, err := e.attest(t, agentattest.JoinToken{Token: e.token(t, time.Hour)})
	if err != nil {
		t.Fatalf("attest with join token: %v", err)
	}
	return a
}

// nodeAttestor makes a node certificate with common name cn under the
// x509pop PKI (or under pki when given) and its client attestor.
func (e *env) nodeAttestor(t testing.TB, cn string, pki *testca.CA) *agentattest.X509PoP {
	t.Helper()
	if pki == nil {
		pki = e.pki
	}
	key := newKey(t)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: n.Add(n, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.Certificates()[0], key.Public(), pki.Signer())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	a, err := agentattest.NewX509PoP(append([]*x509.Certificate{leaf}, pki.Certificates()...), key)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// entry creates a registration entry.
func (e *env) entry(t testing.TB, spiffeID, parent string, sels ...string) store.Entry {
	t.Helper()
	if len(sels) == 0 {
		sels = []string{"unix:uid:1000"}
	}
	ss, err := selector.ParseAll(sels)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.store.CreateEntries(e.ctx, "test", []store.Entry{{SPIFFEID: spiffeID, ParentID: parent, Selectors: ss, DNSNames: nil}})
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

// sign asks for one SVID per (entry, CSR) pair and returns the results.
func sign(t testing.TB, a *agent, reqs ...*nodev1.CSRForEntry) ([]*nodev1.SignResult, error) {
	t.Helper()
	resp, err := a.client.SignX509SVIDs(context.Background(), &nodev1.SignX509SVIDsRequest{Csrs: reqs})
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != len(reqs) {
		t.Fatalf("%d results for %d csrs", len(resp.GetResults()), len(reqs))
	}
	return resp.GetResults(), nil
}

func csrFor(t testing.TB, e store.Entry) *nodev1.CSRForEntry {
	return &nodev1.CSRForEntry{EntryId: e.ID, Csr: csr(t, newKey(t), e.SPIFFEID)}
}

// wantCode fails unless err is a status with code c whose message holds
// every one of parts.
func wantCode(t testing.TB, err error, c codes.Code, parts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != c {
		t.Fatalf("got error %v, want code %s", err, c)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("message %q does not mention %q", st.Message(), p)
		}
	}
}

// counter returns a counter of the node API's registry by name and label
// values (in label-name order).
func counter(t testing.TB, e *env, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, lp := range m.GetLabel() {
				vals = append(vals, lp.GetValue())
			}
			if strings.Join(vals, ",") == strings.Join(labels, ",") {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// What cmd/sigil wires together must fit.
var (
	_ server.Registrar      = (*nodeapi.Server)(nil)
	_ nodeapi.Store         = store.Store(nil)
	_ nodeattest.TokenStore = store.Store(nil)
)
