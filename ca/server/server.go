package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sigilhq/sigil/internal/idleconn"
)

// Registrar adds services to a gRPC server (the admin API, later the node API).
type Registrar interface {
	Register(*grpc.Server)
	ServerOptions() []grpc.ServerOption
}

// Identity is what the CA offers the listeners: its own TLS identity, the
// authorities that client certificates must chain to (the bundle's: the
// CA's unrevoked signing certificates, never the upstream root, so that a
// certificate under a revoked key is refused), and which client SVIDs were
// revoked one by one.
type Identity interface {
	GetX509SVID() (*x509svid.SVID, error)
	X509Authorities(ctx context.Context) ([]*x509.Certificate, error)
	// LeafRevoked reports whether a client SVID was revoked, by serial
	// or by SPIFFE ID.
	LeafRevoked(leaf *x509.Certificate) bool
}

// Config says where to listen. Empty addresses disable a listener.
type Config struct {
	AdminSocket   string // unix socket, created 0600
	ServerAddress string // TCP, TLS with the CA's SVID; client SVIDs verified when given
	// ServerListener, when set, is used instead of listening on ServerAddress
	// (so a caller can learn the port before Run).
	ServerListener net.Listener
	Services       []Registrar
	Identity       Identity
	Logger         *slog.Logger
}

// Server owns the listeners.
type Server struct {
	cfg Config
}

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.AdminSocket == "" {
		return nil, errors.New("server: admin socket path is required")
	}
	if cfg.Identity == nil {
		return nil, errors.New("server: identity is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}, nil
}

// Run listens and serves until ctx ends, then stops gracefully.
func (s *Server) Run(ctx context.Context) error {
	unixLis, err := ListenUnix(s.cfg.AdminSocket, 0o600)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	var opts []grpc.ServerOption
	for _, svc := range s.cfg.Services {
		opts = append(opts, svc.ServerOptions()...)
	}
	local := grpc.NewServer(opts...)
	for _, svc := range s.cfg.Services {
		svc.Register(local)
	}
	serveGRPC(ctx, g, local, unixLis)
	s.cfg.Logger.Info("admin socket listening", "path", s.cfg.AdminSocket)

	if s.cfg.ServerAddress != "" || s.cfg.ServerListener != nil {
		lis := s.cfg.ServerListener
		if lis == nil {
			if lis, err = net.Listen("tcp", s.cfg.ServerAddress); err != nil {
				local.Stop()
				return fmt.Errorf("listen on %s: %w", s.cfg.ServerAddress, err)
			}
		}
		remote := grpc.NewServer(append(opts, append(remoteConnOptions(), grpc.Creds(credentials.NewTLS(TLSConfig(ctx, s.cfg.Identity))))...)...)
		for _, svc := range s.cfg.Services {
			svc.Register(remote)
		}
		serveGRPC(ctx, g, remote, idleconn.Listener(lis))
		s.cfg.Logger.Info("ca server listening", "address", lis.Addr().String())
	}
	return g.Wait()
}

// remoteConnOptions are the per-connection settings of the TLS listener,
// which holds one long-lived connection per agent, so that what each costs
// while idle stays small:
//   - no gRPC read buffer: gRPC's own 32 KiB buffer is pooled only over a
//     raw socket; over TLS it stays with every connection for its life
//     (half of the CA's heap with 2,000 agents), while crypto/tls already
//     buffers each decrypted record that the HTTP/2 framer reads from;
//   - a write buffer taken from a pool only while a write is in progress;
//   - an HTTP/2 ping, not the kernel's keepalive, for a silent agent
//     (internal/idleconn: with both, one lost probe reset idle sync
//     streams, 1,673 of them at once at 10,000 agents).
func remoteConnOptions() []grpc.ServerOption {
	return append(idleconn.ServerOptions(), grpc.ReadBufferSize(0), grpc.SharedWriteBuffer(true))
}

func serveGRPC(ctx context.Context, g *errgroup.Group, srv *grpc.Server, lis net.Listener) {
	g.Go(func() error { return srv.Serve(lis) })
	g.Go(func() error {
		<-ctx.Done()
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			srv.Stop()
		}
		return nil
	})
}

// TLSConfig serves id's current SVID and verifies client certificates,
// when given, against id's current bundle authorities. Callers that need an
// identity (admin calls) check the verified chain themselves. It is exported
// so that tests of the services behind the listener use the same handshake.
//
// Connections share one configuration (certificate pool and chain) while
// id returns the same SVID and authorities (the CA swaps new ones in), so
// each agent's long-lived connection does not keep a copy of its own.
func TLSConfig(ctx context.Context, id Identity) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	var (
		mu        sync.Mutex
		lastSVID  *x509svid.SVID
		lastRoots []*x509.Certificate
		last      *tls.Config
	)
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		roots, err := id.X509Authorities(ctx)
		if err != nil {
			return nil, err
		}
		svid, err := id.GetX509SVID()
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if last != nil && svid == lastSVID && slices.Equal(roots, lastRoots) {
			return last, nil
		}
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		chain := make([][]byte, len(svid.Certificates))
		for i, c := range svid.Certificates {
			chain[i] = c.Raw
		}
		last = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    pool,
			// Runs after chain verification, on every handshake of the
			// node and admin APIs: a revoked client SVID gets no
			// connection at all.
			VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
				for _, chain := range chains {
					if len(chain) > 0 && id.LeafRevoked(chain[0]) {
						return fmt.Errorf("client certificate serial %s was revoked", chain[0].SerialNumber.Text(16))
					}
				}
				return nil
			},
		}
		lastSVID, lastRoots = svid, slices.Clone(roots)
		return last, nil
	}
	return base
}

// ListenUnix listens on a unix socket at path with the given mode. A stale
// socket file left by a crashed process is replaced; a live one is an error.
func ListenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by a running process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return lis, nil
}
