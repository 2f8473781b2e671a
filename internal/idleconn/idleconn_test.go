package idleconn_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sigilhq/sigil/internal/idleconn"
	"github.com/sigilhq/sigil/internal/idleconn/idleconntest"
)

// serve runs a gRPC health server, with idleconn or without, makes one
// call to it and returns its address.
func serve(t *testing.T, wrap bool) net.Addr {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if wrap {
		l, opts = idleconn.Listener(l), idleconn.ServerOptions()
	}
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	return l.Addr()
}

func TestServerConnectionsRunNoKernelKeepalive(t *testing.T) {
	idleconntest.NoKernelKeepalive(t, serve(t, true))
}

// TestPlainServerRunsKernelKeepalive shows what Listener prevents, so
// that the test above cannot pass only because the check does not see
// the timer.
func TestPlainServerRunsKernelKeepalive(t *testing.T) {
	addr := serve(t, false)
	n, total, err := idleconntest.KernelKeepalives(addr)
	if err != nil {
		t.Fatal(err)
	}
	if total != 1 || n != 1 {
		t.Fatalf("plain gRPC server on %s: %d of %d connections run the kernel keepalive, want 1 of 1 (Go turns it on for accepted connections)", addr, n, total)
	}
}

// dialed makes one call through a client with opts and returns the
// client's side of the connection (as the server saw it).
func dialed(t *testing.T, opts ...grpc.DialOption) net.Addr {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peers := make(chan net.Addr, 1)
	gs := grpc.NewServer(idleconn.ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(recordPeers{l, peers})
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///"+l.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	return <-peers
}

type recordPeers struct {
	net.Listener
	peers chan net.Addr
}

func (l recordPeers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.peers <- c.RemoteAddr():
		default:
		}
	}
	return c, err
}

func TestDialedConnectionsRunNoKernelKeepalive(t *testing.T) {
	idleconntest.NoKernelKeepalive(t, dialed(t, idleconn.DialOptions(idleconn.ClientPingAfter, idleconn.ClientPingTimeout)...))
}

// TestPlainClientRunsKernelKeepalive is the control for the test above.
func TestPlainClientRunsKernelKeepalive(t *testing.T) {
	addr := dialed(t)
	if n, total, err := idleconntest.KernelKeepalives(addr); err != nil || total != 1 || n != 1 {
		t.Fatalf("plain gRPC client from %s: %d of %d connections run the kernel keepalive (%v), want 1 of 1", addr, n, total, err)
	}
}
