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
// Clients may ping every 300 ms where ServerOptions allows 5 s.
const testAfter, testTimeout, testMinPing = time.Second, time.Second, 300 * time.Millisecond

func pingingServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(serverOptions(testAfter, testTimeout, testMinPing)...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(Listener(l))
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

// rawHTTP2 opens a TCP connection to addr, sends the HTTP/2 client
// preface and its settings, and nothing more; it is closed when the test
// ends.
func rawHTTP2(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c, fr
}

// TestSilentPeerDropped attacks the server with a peer whose kernel keeps
// the TCP connection up but which never answers at the HTTP/2 level (a
// hung agent process, a proxy that lost its upstream): the server must
// close the connection once its ping goes unanswered, not hold it (and
// its streams) for ever.
func TestSilentPeerDropped(t *testing.T) {
	t.Parallel()
	c, fr := rawHTTP2(t, pingingServer(t))
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

// pingEvery opens a raw HTTP/2 connection to addr and sends n pings, every
// gap, answering nothing else; it returns the GOAWAY the server sent, if
// any, before the last ping's acknowledgement.
func pingEvery(t *testing.T, addr string, n int, gap time.Duration) *http2.GoAwayFrame {
	t.Helper()
	c, fr := rawHTTP2(t, addr)
	frames := make(chan http2.Frame, 64)
	go func() {
		defer close(frames)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			frames <- f
		}
	}()
	c.SetDeadline(time.Now().Add(time.Duration(n)*gap + 10*time.Second))
	for i := range n {
		time.Sleep(gap)
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			return nil // the server closed after its GOAWAY: read it below
		}
		for acked := false; !acked; {
			f, ok := <-frames
			if !ok {
				t.Fatalf("connection closed at ping %d with no GOAWAY", i)
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				return f
			case *http2.PingFrame:
				acked = f.IsAck() && f.Data[0] == byte(i)
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			}
		}
	}
	return nil
}

// A client that pings an idle connection no closer than the policy allows
// (as an agent pinging its CA does) keeps it; the control pings far more
// often and is sent away, so the check can see a GOAWAY.
func TestClientPingsWithinPolicyKept(t *testing.T) {
	t.Parallel()
	if ga := pingEvery(t, pingingServer(t), 5, testMinPing+200*time.Millisecond); ga != nil {
		t.Fatalf("client pinging every %s sent away: GOAWAY %v %q", testMinPing+200*time.Millisecond, ga.ErrCode, ga.DebugData())
	}
	ga := pingEvery(t, pingingServer(t), 5, 20*time.Millisecond)
	if ga == nil || ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("client pinging every 20ms: GOAWAY %v, want ENHANCE_YOUR_CALM (too_many_pings)", ga)
	}
}

// The defaults fit together: an agent's pings (ClientPingAfter, and
// gRPC-Go's least, 10 s) come no closer than servers allow.
func TestClientPingsAllowedByServers(t *testing.T) {
	if ClientPingAfter < minClientPing || 10*time.Second < minClientPing || ClientPingTimeout >= ClientPingAfter {
		t.Fatalf("ClientPingAfter %s, gRPC's least 10s, ClientPingTimeout %s against the servers' least %s", ClientPingAfter, ClientPingTimeout, minClientPing)
	}
}
