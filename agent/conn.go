package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// swapConn is a grpc.ClientConnInterface whose connection is replaced when
// the agent's SVID changes: the CA accepts only the agent's current SVID,
// and a TLS connection keeps the certificate it was opened with.
type swapConn struct {
	p   atomic.Pointer[grpc.ClientConn]
	gen atomic.Uint64 // bumped by every swap
	// onDenied is called when a stream on the current connection ends
	// because the CA refused the agent (evicted, banned, expired SVID).
	// Streams on a replaced connection are refused as "renewed" and
	// ignored.
	onDenied func()
}

var _ grpc.ClientConnInterface = (*swapConn)(nil)

func (s *swapConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cc := s.p.Load()
	if cc == nil {
		return status.Error(codes.Unavailable, "agent: not connected to the CA")
	}
	return cc.Invoke(ctx, method, args, reply, opts...)
}

func (s *swapConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc := s.p.Load()
	if cc == nil {
		return nil, status.Error(codes.Unavailable, "agent: not connected to the CA")
	}
	gen := s.gen.Load()
	cs, err := cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &watchedStream{ClientStream: cs, check: func(err error) {
		if refused(err) && s.gen.Load() == gen && s.onDenied != nil {
			s.onDenied()
		}
	}}, nil
}

// watchedStream reports the error a stream ends with.
type watchedStream struct {
	grpc.ClientStream
	check func(error)
}

func (w *watchedStream) RecvMsg(m any) error {
	err := w.ClientStream.RecvMsg(m)
	if err != nil {
		w.check(err)
	}
	return err
}

// swap makes cc current and closes the previous connection, ending the
// calls on it; their callers retry on cc.
func (s *swapConn) swap(cc *grpc.ClientConn) {
	s.gen.Add(1)
	if old := s.p.Swap(cc); old != nil {
		old.Close()
	}
}

func (s *swapConn) close() { s.swap(nil) }

type svidSource func() (*x509svid.SVID, error)

func (f svidSource) GetX509SVID() (*x509svid.SVID, error) { return f() }

type rootsSource struct {
	td    spiffeid.TrustDomain
	roots func() []*x509.Certificate
}

func (r rootsSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != r.td {
		return nil, fmt.Errorf("no bundle for trust domain %s", td)
	}
	return x509bundle.FromX509Authorities(td, r.roots()), nil
}

func bundleSet(td spiffeid.TrustDomain, roots []*x509.Certificate) x509bundle.Source {
	return x509bundle.FromX509Authorities(td, roots)
}

// checkServer makes one TLS handshake with the CA, so that a CA that is
// not who the trust bundle says (a wrong bundle, a wrong address) is an
// error the operator sees at once rather than a connection retried forever.
// Failing to connect at all is Unavailable: the CA may come up later.
func (a *Agent) checkServer(ctx context.Context) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", a.cfg.ServerAddress)
	if err != nil {
		return status.Errorf(codes.Unavailable, "connect to the CA at %s: %v", a.cfg.ServerAddress, err)
	}
	defer raw.Close()
	conf := tlsconfig.TLSClientConfig(rootsSource{td: a.cfg.TrustDomain, roots: a.roots}, a.authorizeCA())
	conn := tls.Client(raw, conf)
	if err := conn.HandshakeContext(ctx); err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) {
			return status.Errorf(codes.Unavailable, "TLS handshake with the CA at %s: %v", a.cfg.ServerAddress, err)
		}
		return fmt.Errorf("the server at %s is not %s under the trust bundle (check trust_bundle_file and server_address): %w", a.cfg.ServerAddress, a.caID, err)
	}
	return conn.Close()
}

// dial opens a (lazy) connection to the CA that accepts only the CA's own
// SPIFFE ID, chaining to the agent's current roots; with mtls it presents
// the agent's current SVID.
func (a *Agent) dial(mtls bool) (*grpc.ClientConn, error) {
	bundles := rootsSource{td: a.cfg.TrustDomain, roots: a.roots}
	authz := a.authorizeCA()
	conf := tlsconfig.TLSClientConfig(bundles, authz)
	if mtls {
		conf = tlsconfig.MTLSClientConfig(svidSource(a.getX509SVID), bundles, authz)
	}
	cc, err := grpc.NewClient(a.cfg.ServerAddress,
		grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: a.cfg.RetryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: a.cfg.RetryMax},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial the CA at %s: %w", a.cfg.ServerAddress, err)
	}
	return cc, nil
}
