package idleconn

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Scaled down: the server pings after 1 s of silence (gRPC's least) and
// waits 1 s for the answer, where ServerOptions says 1 min and 20 s.
const testAfter, testTimeout = time.Second, time.Second

func pingingServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(serverOptions(testAfter, testTimeout)...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(Listener(l))
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

// TestSilentPeerDropped attacks the server with a peer whose kernel keeps
// the TCP connection up but which never answers at the HTTP/2 level (a
// hung agent process, a proxy that lost its upstream): the server must
// close the connection once its ping goes unanswered, not hold it (and
// its streams) for ever.
func TestSilentPeerDropped(t *testing.T) {
	t.Parallel()
	c, err := net.Dial("tcp", pingingServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(10 * (testAfter + testTimeout)))
	pinged := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("server still holds a peer that answered nothing for %s (pinged: %v); want it dropped after %s + %s", time.Since(start).Round(time.Millisecond), pinged, testAfter, testTimeout)
			}
			if !pinged {
				t.Fatalf("connection ended (%v) before the server pinged", err)
			}
			return // closed after the unanswered ping
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			pinged = true // and not answered
		}
	}
}

// TestAnsweringPeerKept: a live peer that is merely idle answers the
// pings (gRPC's client transport does) and keeps its connection.
func TestAnsweringPeerKept(t *testing.T) {
	t.Parallel()
	cc, err := grpc.NewClient(pingingServer(t), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*(testAfter+testTimeout))
	defer cancel()
	if cc.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatalf("idle but answering client lost its connection: now %s", cc.GetState())
	}
}
