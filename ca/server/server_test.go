package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/sigilhq/sigil/internal/idleconn/idleconntest"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/testrun"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type identity struct {
	svid    *x509svid.SVID
	roots   []*x509.Certificate
	revoked map[string]bool // serials, lowercase hex
}

func (i identity) GetX509SVID() (*x509svid.SVID, error)                         { return i.svid, nil }
func (i identity) X509Authorities(context.Context) ([]*x509.Certificate, error) { return i.roots, nil }
func (i identity) LeafRevoked(leaf *x509.Certificate) bool {
	return i.revoked[leaf.SerialNumber.Text(16)]
}

// peerRecorder is a service that remembers the verified client chain of
// the last call, to show what the listener hands handlers.
type peerRecorder struct{ chains chan [][]*x509.Certificate }

func (p *peerRecorder) Register(s *grpc.Server) {
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
}

func (p *peerRecorder) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		var chains [][]*x509.Certificate
		if pr, ok := peer.FromContext(ctx); ok {
			if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
				chains = info.State.VerifiedChains
			}
		}
		select {
		case p.chains <- chains:
		default:
		}
		return h(ctx, req)
	})}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(t *testing.T, id identity) (cfg Config, rec *peerRecorder) {
	t.Helper()
	dir := t.TempDir()
	rec = &peerRecorder{chains: make(chan [][]*x509.Certificate, 1)}
	cfg = Config{
		AdminSocket: filepath.Join(dir, "admin.sock"), ServerAddress: freePort(t),
		Services: []Registrar{rec}, Identity: id,
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testrun.Start(t, srv.Run)
	waitFor(t, func() error {
		c, err := net.Dial("tcp", cfg.ServerAddress)
		if err == nil {
			c.Close()
		}
		return err
	})
	return cfg, rec
}

func waitFor(t *testing.T, f func() error) {
	t.Helper()
	var err error
	for range 200 {
		if err = f(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(err)
}

func TestTLSListenerPresentsTheCAIdentityAndVerifiesClients(t *testing.T) {
	authority := testca.New(t, td)
	caID := spiffeid.RequireFromString("spiffe://example.org/sigil/ca")
	client := authority.Issue(t, "spiffe://example.org/admin")
	revoked := authority.Issue(t, "spiffe://example.org/admin")
	cfg, rec := start(t, identity{svid: authority.Issue(t, caID.String()), roots: authority.Roots(),
		revoked: map[string]bool{revoked.Certificates[0].SerialNumber.Text(16): true}})
	foreign := testca.New(t, td).Issue(t, "spiffe://example.org/admin")

	call := func(svid *x509svid.SVID, authorize tlsconfig.Authorizer) error {
		tc := tlsconfig.MTLSClientConfig(svid, authority.Bundle(), authorize)
		conn, err := grpc.NewClient(cfg.ServerAddress, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	t.Run("client with an SVID of our trust domain", func(t *testing.T) {
		if err := call(client, tlsconfig.AuthorizeID(caID)); err != nil {
			t.Fatal(err)
		}
		chains := <-rec.chains
		if len(chains) == 0 {
			t.Fatal("handler saw no verified client chain")
		}
		if id, _ := x509svid.IDFromCert(chains[0][0]); id.String() != "spiffe://example.org/admin" {
			t.Fatalf("verified client = %s", id)
		}
	})
	t.Run("client certificate from a foreign CA is refused", func(t *testing.T) {
		if err := call(foreign, tlsconfig.AuthorizeID(caID)); err == nil {
			t.Fatal("handshake with a foreign client certificate succeeded")
		}
	})
	t.Run("revoked client certificate is refused", func(t *testing.T) {
		err := call(revoked, tlsconfig.AuthorizeID(caID))
		if err == nil {
			t.Fatal("handshake with a revoked client certificate succeeded")
		}
		select {
		case <-rec.chains:
			t.Fatal("a handler ran for a revoked client certificate")
		default:
		}
	})
	t.Run("client expecting another server ID refuses the CA", func(t *testing.T) {
		if err := call(client, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/other"))); err == nil {
			t.Fatal("client accepted a server with an unexpected SPIFFE ID")
		}
	})
	t.Run("client without a certificate reaches handlers unverified", func(t *testing.T) {
		tc := tlsconfig.TLSClientConfig(authority.Bundle(), tlsconfig.AuthorizeID(caID))
		conn, err := grpc.NewClient(cfg.ServerAddress, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		if chains := <-rec.chains; len(chains) != 0 {
			t.Fatal("unauthenticated call carried a verified chain")
		}
		// An agent's sync stream is idle between changes: the CA's side
		// of its connection must not run the kernel keepalive, which
		// with gRPC's TCP user timeout reset 1,673 of 10,000 agents at
		// once (internal/idleconn).
		addr, err := net.ResolveTCPAddr("tcp", cfg.ServerAddress)
		if err != nil {
			t.Fatal(err)
		}
		idleconntest.NoKernelKeepalive(t, addr)
	})
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	l, err := ListenUnix(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := ListenUnix(path, 0o600); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	l.Close()
	// A stale socket file (no listener) is replaced.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l2, err := ListenUnix(path, 0o600)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

// swappable is an identity whose SVID and authorities change, as the CA's
// do when it rotates.
type swappable struct {
	mu    sync.Mutex
	svid  *x509svid.SVID
	roots []*x509.Certificate
}

func (s *swappable) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid, nil
}

func (s *swappable) X509Authorities(context.Context) ([]*x509.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roots, nil
}

func (s *swappable) LeafRevoked(*x509.Certificate) bool { return false }

// Connections share one configuration while the identity is the same,
// and get a new one, with the new certificate and authorities, once it
// changes.
func TestTLSConfigSharedUntilIdentityChanges(t *testing.T) {
	a, b := testca.New(t, td), testca.New(t, td)
	id := &swappable{svid: a.Issue(t, "spiffe://example.org/sigil/ca"), roots: a.Roots()}
	get := TLSConfig(context.Background(), id).GetConfigForClient
	conf := func() *tls.Config {
		t.Helper()
		c, err := get(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := conf()
	if again := conf(); again != first {
		t.Error("a second connection with the same identity got a configuration of its own")
	}
	verifies := func(c *tls.Config, svid *x509svid.SVID) bool {
		inter := x509.NewCertPool()
		for _, c := range svid.Certificates[1:] {
			inter.AddCert(c)
		}
		_, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: c.ClientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}
	clientB := b.Issue(t, "spiffe://example.org/admin")
	if verifies(first, clientB) {
		t.Fatal("a client of the other authority verifies before it is trusted")
	}

	id.mu.Lock()
	id.roots = append(slices.Clone(a.Roots()), b.Roots()...)
	id.mu.Unlock()
	second := conf()
	if second == first || !verifies(second, clientB) {
		t.Error("new authorities did not reach the next connection")
	}

	id.mu.Lock()
	id.svid = b.Issue(t, "spiffe://example.org/sigil/ca")
	id.mu.Unlock()
	third := conf()
	if third == second || third.Certificates[0].Leaf != id.svid.Certificates[0] {
		t.Error("a new SVID did not reach the next connection")
	}
}
