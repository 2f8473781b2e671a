// Package idleconn keeps the long-lived, mostly idle TCP connections of
// Sigil's gRPC servers open (an agent's sync stream to the CA, Envoy's
// connection to authz) while still dropping peers that are gone.
//
// gRPC-Go sets TCP_USER_TIMEOUT on every server connection (its keepalive
// timeout, 20 s unless set), and Go's net package turns the kernel's TCP
// keepalive on for every accepted connection (a probe after 15 s idle,
// then every 15 s). On the kernel measured here (Linux 6.18) the two
// together abort idle connections: the keepalive timer finds a probe out
// and no byte received for longer than the user timeout, and resets the
// connection, about 30 s after its last byte. Of 10,000 idle loopback
// connections, 9,301 were reset within 65 s; with a 60 s user timeout,
// 736 of 5,000 within 70 s; with no probes from the server side, none.
// At 10,000 agents on one CA that was 1,673 sync streams reset at once,
// each agent reconnecting and resyncing, and a 6.5 s sync lag.
//
// So a server's accepted connections get no kernel keepalive (Listener),
// and gRPC's HTTP/2 ping takes its place (ServerOptions): after PingAfter
// without a byte from the peer, a ping that must be acknowledged within
// PingTimeout, which is also the TCP user timeout for unacknowledged data.
//
// The client side is the mirror image (DialOptions): a server whose
// process hangs (stopped, deadlocked, a replica behind a frozen load
// balancer) keeps its kernel answering TCP, so without a ping a client's
// idle stream to it waits forever. An agent pings its CA replica after
// ClientPingAfter of silence and moves on when no answer comes within
// ClientPingTimeout; its dialed connections carry no kernel keepalive, for
// the same reason as the server's.
package idleconn

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

const (
	// PingAfter is how long a connection may be silent before the server
	// pings the peer: at 10,000 agents, about 170 pings per second.
	PingAfter = time.Minute
	// PingTimeout is how long the peer has to acknowledge the ping, or
	// any data sent, before the connection is dropped.
	PingTimeout = 20 * time.Second

	// ClientPingAfter is how long a client's connection may be silent
	// before the client pings the server: at 10,000 idle agents, about
	// 330 pings per second at the CA.
	ClientPingAfter = 30 * time.Second
	// ClientPingTimeout is how long the server has to acknowledge it (as
	// long as a server gives a client: a CA busy with a renewal wave must
	// not shed its agents into a reconnect storm).
	ClientPingTimeout = 20 * time.Second
	// minClientPing is the closest pings from a client may come before
	// the server drops it as abusive (gRPC's GOAWAY too_many_pings);
	// gRPC-Go clients ping at most every 10 s.
	minClientPing = 5 * time.Second
)

// Listener returns l with the kernel's TCP keepalive turned off on every
// connection it accepts (other connections are passed through).
func Listener(l net.Listener) net.Listener { return noKeepAlive{l} }

type noKeepAlive struct{ net.Listener }

func (l noKeepAlive) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// An error leaves the connection as Go made it, which serves
		// as before: better than an accept error, which ends Serve.
		_ = tc.SetKeepAlive(false)
	}
	return c, nil
}

// ServerOptions are the gRPC keepalive settings that go with Listener.
// They also let clients ping (DialOptions) as often as every 5 s, with or
// without a call in progress; gRPC's default (5 min, only during calls)
// would drop an idle agent that pings its CA.
func ServerOptions() []grpc.ServerOption {
	return serverOptions(PingAfter, PingTimeout, minClientPing)
}

func serverOptions(after, timeout, minPing time.Duration) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: after, Timeout: timeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minPing, PermitWithoutStream: true}),
	}
}

// DialOptions make a gRPC client ping a server silent for after and drop
// the connection when no answer comes within timeout (gRPC-Go raises
// after to at least 10 s), and dial TCP without the kernel's keepalive.
// The server must run ServerOptions, which allow such pings.
func DialOptions(after, timeout time.Duration) []grpc.DialOption {
	d := net.Dialer{KeepAlive: -1}
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: after, Timeout: timeout, PermitWithoutStream: true}),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}),
	}
}
