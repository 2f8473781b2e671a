package agent_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/pgtest"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// twoReplicas starts two CA replicas, a and b, on one real PostgreSQL
// database under one root, each serving the node API on its own address.
func twoReplicas(t *testing.T) (a, b *testCA) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.OpenPostgres(ctx, pgtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := t.TempDir()
	up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: keys.NewMemory(), CertPath: filepath.Join(dir, "root.crt")})
	if err != nil {
		t.Fatal(err)
	}
	pki := testca.New(t, spiffeid.RequireTrustDomainFromString("corp.example"))
	replica := func(name string) *testCA {
		c, err := ca.New(ca.Config{TrustDomain: td, InstanceID: name, Store: st, Keys: keys.NewMemory(), Upstream: up, X509SVIDTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Init(ctx); err != nil {
			t.Fatal(err)
		}
		roots, err := c.Roots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		rdir := filepath.Join(dir, name)
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		tc := &testCA{t: t, dir: rdir, addr: addr, store: st, ca: c, roots: roots, pki: pki, agentTTL: time.Hour}
		tc.Start()
		t.Cleanup(tc.Stop)
		return tc
	}
	a = replica("a")
	b = replica("b")
	// Each replica publishes its keys at Init; a must also see b's, which
	// it merges at its next tick (Run ticks every second).
	deadline := time.Now().Add(10 * time.Second)
	for {
		auth, err := a.ca.X509Authorities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(auth) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica a publishes %d X.509 authorities, want both replicas' keys", len(auth))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return a, b
}

// An agent that knows both replicas moves to the other one when the one it
// uses goes away, and back when that one goes away in turn; its SVID,
// signed by one replica's key, is accepted by the other, which signs for
// it.
func TestFailoverBetweenReplicas(t *testing.T) {
	a, b := twoReplicas(t)
	tok := a.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	a.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")

	ag, reg, _, errc := runAgent(t, a, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.ServerAddress = ""
		c.ServerAddresses = []string{a.addr, b.addr}
	})
	web := ag.Cache().Subscribe(sels("unix:uid:1000"))
	defer web.Close()
	waitFor(t, web, "the web SVID from a", hasID("spiffe://example.org/web"))

	// Each step: stop one replica, make a new entry, and wait for its SVID,
	// which only the other replica can sign now.
	for i, step := range []struct {
		name       string
		stop, keep *testCA
	}{
		{"a stops: the agent moves to b", a, b},
		{"a is back and b stops: the agent returns to a", b, a},
	} {
		t.Run(step.name, func(t *testing.T) {
			if i == 1 {
				a.Start()
			}
			start := time.Now()
			step.stop.Stop()
			id := "spiffe://example.org/after-" + strings.Fields(step.name)[0]
			uid := "unix:uid:" + []string{"2001", "2002"}[i]
			step.keep.entry(t, agentID, id, uid)
			sub := ag.Cache().Subscribe(sels(uid))
			defer sub.Close()
			u := waitFor(t, sub, "an SVID signed by the replica left", hasID(id))
			t.Logf("entry made while one replica was down reached the workload in %v", time.Since(start).Round(time.Millisecond))
			if n := value(t, reg, "sigil_agent_ca_failovers_total", ""); n < float64(i+1) {
				t.Errorf("failovers = %v, want at least %d", n, i+1)
			}
			// The web SVID was never taken away.
			now := ag.Cache().Subscribe(sels("unix:uid:1000"))
			w := <-now.Updates()
			now.Close()
			if !hasID("spiffe://example.org/web")(w) {
				t.Errorf("web lost its SVID during failover: %d identities", len(w.Identities))
			}
			if u.Identities[0].SVID.Certificates[0].NotAfter.Before(time.Now()) {
				t.Error("expired SVID served")
			}
		})
	}
	select {
	case err := <-errc:
		t.Fatalf("agent stopped: %v", err)
	default:
	}
}

// An agent whose replicas are all unreachable at start attests as soon as
// one listed later answers: attesting moves along the list too.
func TestAttestFailsOverToALaterReplica(t *testing.T) {
	a, _ := twoReplicas(t)
	tok := a.token(t)
	a.entry(t, "spiffe://example.org/sigil/agent/join_token/"+tok, "spiffe://example.org/web", "unix:uid:1000")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	ag, _, _, _ := runAgent(t, a, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.ServerAddress = deadAddr
		c.ServerAddresses = []string{a.addr}
	})
	web := ag.Cache().Subscribe(sels("unix:uid:1000"))
	defer web.Close()
	waitFor(t, web, "the web SVID", hasID("spiffe://example.org/web"))
}

// A DNS name in server_address stands for every address it resolves to.
func TestServerNameResolvesToSeveralReplicas(t *testing.T) {
	a, _ := twoReplicas(t)
	tok := a.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	a.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	_, portA, _ := net.SplitHostPort(a.addr)
	// Both replicas listen on 127.0.0.1; a name resolving to 127.0.0.1 and
	// ::1 stands for two addresses, of which only one answers on each port.
	var lookups atomic.Int32
	lookup := func(_ context.Context, host string) ([]string, error) {
		lookups.Add(1)
		if host != "ca.example.test" {
			return nil, errors.New("no such host")
		}
		return []string{"::1", "127.0.0.1"}, nil
	}
	ag, _, _, _ := runAgent(t, a, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.ServerAddress = net.JoinHostPort("ca.example.test", portA)
		c.LookupHost = lookup
	})
	web := ag.Cache().Subscribe(sels("unix:uid:1000"))
	defer web.Close()
	waitFor(t, web, "the web SVID through the second resolved address", hasID("spiffe://example.org/web"))
	if lookups.Load() == 0 {
		t.Error("the name was never resolved")
	}
}

// freezer is a TCP proxy to a replica that can freeze: it then stops
// passing bytes either way but keeps every connection open, as a replica
// whose process hangs (stopped, deadlocked) does while its kernel still
// holds TCP.
type freezer struct {
	addr   string
	frozen chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: lis.Addr().String(), frozen: make(chan struct{})}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns = append(conns, c, up)
			go f.pipe(c, up)
			go f.pipe(up, c)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return f
}

// pipe copies src to dst until either closes; once frozen it holds what
// it read and reads no more.
func (f *freezer) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-f.frozen:
			return // nothing more leaves; src stays open, unread
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (f *freezer) freeze() { close(f.frozen) }

// A replica that hangs with its TCP connections open (attack: stop the
// CA process, or freeze whatever sits in front of it) does not keep an
// agent from changes: the agent pings the silent replica, gets no answer,
// and moves to the next, where a new entry reaches it. Without the ping
// the sync stream waits on the hung replica forever.
func TestFailoverFromAHungReplica(t *testing.T) {
	a, b := twoReplicas(t)
	proxy := newFreezer(t, a.addr)
	tok := a.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	a.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	ag, reg, _, errc := runAgent(t, a, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.ServerAddress = ""
		c.ServerAddresses = []string{proxy.addr, b.addr}
		c.CAPingAfter = 10 * time.Second // gRPC's least
	})
	web := ag.Cache().Subscribe(sels("unix:uid:1000"))
	defer web.Close()
	waitFor(t, web, "the web SVID through the proxy to a", hasID("spiffe://example.org/web"))

	start := time.Now()
	proxy.freeze()
	b.entry(t, agentID, "spiffe://example.org/after-hang", "unix:uid:2003")
	sub := ag.Cache().Subscribe(sels("unix:uid:2003"))
	defer sub.Close()
	// Bound on a hung test only: ping after 10 s, 10 s to answer, then
	// the failover backoff.
	deadline := time.After(90 * time.Second)
	for got := false; !got; {
		select {
		case u := <-sub.Updates():
			got = hasID("spiffe://example.org/after-hang")(u)
		case err := <-errc:
			t.Fatalf("agent stopped: %v", err)
		case <-deadline:
			t.Fatal("no SVID for an entry made after the replica hung: the agent is still waiting on it")
		}
	}
	t.Logf("entry made after the replica hung reached the workload in %v", time.Since(start).Round(time.Millisecond))
	if n := value(t, reg, "sigil_agent_ca_failovers_total", ""); n < 1 {
		t.Errorf("failovers = %v, want at least 1", n)
	}
}
