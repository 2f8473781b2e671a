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
package idleconn

import (
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
func ServerOptions() []grpc.ServerOption { return serverOptions(PingAfter, PingTimeout) }

func serverOptions(after, timeout time.Duration) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.KeepaliveParams(keepalive.ServerParameters{Time: after, Timeout: timeout})}
}
