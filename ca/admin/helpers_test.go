package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/testca"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
)

// fakeAuthority records the key operations asked of it; err, when set, is
// what every call returns.
type fakeAuthority struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeAuthority) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeAuthority) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeAuthority) Status(context.Context) (ca.Status, error) {
	if err := f.record("status"); err != nil {
		return ca.Status{}, err
	}
	return ca.Status{TrustDomain: td.Name(), Keys: []ca.KeyStatus{
		{Kind: ca.X509, ID: "aaaa", State: ca.Active, NotBefore: testNow, NotAfter: testNow.Add(24 * time.Hour)},
		{Kind: ca.JWT, ID: "kid1", State: ca.Prepared, NotBefore: testNow, NotAfter: testNow.Add(24 * time.Hour)},
	}}, nil
}

func (f *fakeAuthority) Prepare(_ context.Context, k ca.KeyKind) (ca.KeyStatus, error) {
	if err := f.record("prepare " + string(k)); err != nil {
		return ca.KeyStatus{}, err
	}
	return ca.KeyStatus{Kind: k, ID: "next", State: ca.Prepared, NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}, nil
}

func (f *fakeAuthority) Activate(_ context.Context, k ca.KeyKind) (ca.KeyStatus, error) {
	if err := f.record("activate " + string(k)); err != nil {
		return ca.KeyStatus{}, err
	}
	return ca.KeyStatus{Kind: k, ID: "next", State: ca.Active, NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}, nil
}

func (f *fakeAuthority) Taint(_ context.Context, k ca.KeyKind, id string) error {
	return f.record("taint " + string(k) + " " + id)
}

func (f *fakeAuthority) Revoke(_ context.Context, k ca.KeyKind, id string) error {
	return f.record("revoke " + string(k) + " " + id)
}

func (f *fakeAuthority) RevokeSVID(_ context.Context, actor, serial, spiffeID string) error {
	return f.record("revoke svid " + serial + " " + spiffeID + " by " + actor)
}

func (f *fakeAuthority) RevokeSPIFFEID(_ context.Context, actor, spiffeID string) error {
	return f.record("revoke spiffe id " + spiffeID + " by " + actor)
}

var _ Authority = (*fakeAuthority)(nil)

type env struct {
	srv    *Server
	store  *sqlstore.Store
	auth   *fakeAuthority
	client adminv1.AdminClient
	socket string
}

// newEnv starts the admin API on a unix socket in a temporary directory,
// backed by a real SQLite store, and returns a client connected to it.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "sigil.db"), sqlstore.WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	auth := &fakeAuthority{}
	srv, err := New(Config{
		TrustDomain: td,
		Store:       st,
		Authority:   auth,
		Now:         func() time.Time { return testNow },
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	socket := filepath.Join(dir, "admin.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{srv: srv, store: st, auth: auth, client: adminv1.NewAdminClient(conn), socket: socket}
}

// wantCode fails unless err is a status with code c whose message holds
// every one of parts.
func wantCode(t *testing.T, err error, c codes.Code, parts ...string) {
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

// tlsCert turns an X509-SVID into a TLS certificate.
func tlsCert(svid *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: svid.PrivateKey}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

func rootsPEM(c *testca.CA) []byte {
	var out []byte
	for _, r := range c.Roots() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return out
}

// issuer is a real Sigil CA (memory keys, self-signed root, its journal in
// a SQLite store), signing SVIDs the way the node API does.
type issuer struct {
	ca    *ca.CA
	roots []*x509.Certificate
}

// newIssuer starts a CA for td keeping its journal in st, or in a store of
// its own when st is nil.
func newIssuer(t *testing.T, td spiffeid.TrustDomain, st *sqlstore.Store) *issuer {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if st == nil {
		var err error
		if st, err = sqlstore.OpenSQLite(ctx, filepath.Join(dir, "sigil.db")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	km := keys.NewMemory()
	up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: filepath.Join(dir, "root.crt")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.New(ca.Config{TrustDomain: td, Store: st, Keys: km, Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	roots, err := up.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{ca: c, roots: roots}
}

// issue signs an SVID for id on behalf of entryID ("" for none, as for an
// agent's own SVID).
func (i *issuer) issue(t *testing.T, id, entryID string, dns ...string) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := i.ca.SignX509SVID(context.Background(),
		&ca.CSR{ID: spiffeid.RequireFromString(id), PublicKey: key.Public(), DNSNames: dns},
		ca.SVIDParams{DNSNames: dns, EntryID: entryID})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: svid.ID, Certificates: svid.Certificates, PrivateKey: key}
}

func (i *issuer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range i.roots {
		p.AddCert(r)
	}
	return p
}

// serveTLS serves srv over mTLS on 127.0.0.1 with a server SVID from ours,
// verifying client certificates against ours and the extra roots (as the
// CA does with every root of its bundle), and returns the address.
func serveTLS(t *testing.T, srv *Server, ours *issuer, extra ...*x509.Certificate) string {
	t.Helper()
	pool := ours.pool()
	for _, r := range extra {
		pool.AddCert(r)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{tlsCert(ours.issue(t, "spiffe://example.org/sigil/ca", "", "localhost"))},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(credentials.NewTLS(cfg)))...)
	srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// dialTLS connects to addr presenting client (if any), trusting ours for
// the server.
func dialTLS(t *testing.T, addr string, ours *issuer, client *x509svid.SVID) adminv1.AdminClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: ours.pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{tlsCert(client)}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminClient(conn)
}

var errBoom = errors.New("open /var/lib/sigil/keys/secret.pem: permission denied")

func netListenLocal() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
