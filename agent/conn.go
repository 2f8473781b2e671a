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
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/idleconn"
)

// swapConn is a grpc.ClientConnInterface whose connection is replaced when
// the agent's SVID changes (the CA accepts only the agent's current SVID,
// and a TLS connection keeps the certificate it was opened with) and when
// the agent fails over to another CA replica.
type swapConn struct {
	p   atomic.Pointer[conn]
	gen atomic.Uint64 // bumped by every swap
	// onDenied is called when a stream on the current connection ends
	// because the CA refused the agent (evicted, banned, expired SVID).
	// Streams on a replaced connection are refused as "renewed" and
	// ignored.
	onDenied func()
	// onFailed is called with the connection's generation when a call or
	// stream on it ends because the replica is unreachable or failing;
	// onOK when a call succeeds or a stream delivers. Either may be nil
	// and must not block.
	onFailed, onOK func(gen uint64)
}

// conn is one connection to one CA replica.
type conn struct {
	cc   *grpc.ClientConn
	addr string
	gen  uint64
}

var _ grpc.ClientConnInterface = (*swapConn)(nil)

func (s *swapConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c := s.p.Load()
	if c == nil {
		return status.Error(codes.Unavailable, "agent: not connected to the CA")
	}
	err := c.cc.Invoke(ctx, method, args, reply, opts...)
	s.report(c.gen, err)
	return err
}

func (s *swapConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c := s.p.Load()
	if c == nil {
		return nil, status.Error(codes.Unavailable, "agent: not connected to the CA")
	}
	cs, err := c.cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		s.report(c.gen, err)
		return nil, err
	}
	return &watchedStream{ClientStream: cs, check: func(err error) {
		if err == nil {
			if s.onOK != nil {
				s.onOK(c.gen)
			}
			return
		}
		if refused(err) && s.gen.Load() == c.gen && s.onDenied != nil {
			s.onDenied()
		}
		s.report(c.gen, err)
	}}, nil
}

// report passes the outcome of a call on the connection of generation gen
// to onOK or onFailed.
func (s *swapConn) report(gen uint64, err error) {
	switch {
	case err == nil:
		if s.onOK != nil {
			s.onOK(gen)
		}
	case replicaFailed(err):
		if s.onFailed != nil {
			s.onFailed(gen)
		}
	}
}

// replicaFailed reports whether err says the replica itself is
// unreachable or failing, so that another replica may do better.
func replicaFailed(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

// watchedStream reports every message received and the error a stream
// ends with.
type watchedStream struct {
	grpc.ClientStream
	check func(error)
}

func (w *watchedStream) RecvMsg(m any) error {
	err := w.ClientStream.RecvMsg(m)
	if !errors.Is(err, io.EOF) {
		w.check(err)
	}
	return err
}

// swap makes cc (a connection to addr) current and closes the previous
// connection, ending the calls on it; their callers retry on cc.
func (s *swapConn) swap(cc *grpc.ClientConn, addr string) {
	var next *conn
	gen := s.gen.Add(1)
	if cc != nil {
		next = &conn{cc: cc, addr: addr, gen: gen}
	}
	if old := s.p.Swap(next); old != nil {
		old.cc.Close()
	}
}

// current is the connection in use (nil: none) .
func (s *swapConn) current() *conn { return s.p.Load() }

func (s *swapConn) close() { s.swap(nil, "") }

type svidSource func() (*x509svid.SVID, error)

func (f svidSource) GetX509SVID() (*x509svid.SVID, error) { return f() }

func bundleSet(td spiffeid.TrustDomain, roots []*x509.Certificate) x509bundle.Source {
	return x509bundle.FromX509Authorities(td, roots)
}

// checkServer makes one TLS handshake with the CA, so that a CA that is
// not who the trust bundle says (a wrong bundle, a wrong address) is an
// error the operator sees at once rather than a connection retried forever.
// Failing to connect at all is Unavailable: the CA may come up later.
func (a *Agent) checkServer(ctx context.Context, addr string) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return status.Errorf(codes.Unavailable, "connect to the CA at %s: %v", addr, err)
	}
	defer raw.Close()
	conn := tls.Client(raw, a.caTLSConfig(false))
	if err := conn.HandshakeContext(ctx); err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, io.EOF) {
			return status.Errorf(codes.Unavailable, "TLS handshake with the CA at %s: %v", addr, err)
		}
		return fmt.Errorf("the server at %s is not %s under the trust bundle (check trust_bundle_file and server_address): %w", addr, a.caID, err)
	}
	return conn.Close()
}

// dial opens a (lazy) connection to the CA replica at addr that accepts
// only the CA's own SPIFFE ID, chaining to the agent's current roots (or,
// failing them, its bootstrap roots: catrust.go); with mtls it presents
// the agent's current SVID. addr is dialed as it is: the agent resolves
// names itself (see servers) to fail over between the addresses.
//
// A replica silent for CAPingAfter is pinged, and one that does not answer
// (its process hung while its kernel still holds TCP open) ends the
// connection's calls as Unavailable, which moves the agent on (failover.go):
// otherwise the sync stream would wait on it forever and miss every change.
func (a *Agent) dial(addr string, mtls bool) (*grpc.ClientConn, error) {
	opts := append(idleconn.DialOptions(a.cfg.CAPingAfter, min(idleconn.ClientPingTimeout, a.cfg.CAPingAfter)),
		grpc.WithTransportCredentials(credentials.NewTLS(a.caTLSConfig(mtls))),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: a.cfg.RetryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: a.cfg.RetryMax},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial the CA at %s: %w", addr, err)
	}
	return cc, nil
}
