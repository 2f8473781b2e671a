package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/nodeattest"
	"github.com/sigilhq/sigil/agent/svidstore"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/nodeapi"
	canodeattest "github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/server"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// testCA is a real CA (in-memory keys, self-signed root, SQLite store)
// whose node API is served by the real ca/server over TLS on 127.0.0.1.
// Stop and Start take the node API away and bring it back on the same
// address, as a CA process restart does.
type testCA struct {
	t     testing.TB
	dir   string
	addr  string
	store *sqlstore.Store
	ca    *ca.CA
	roots []*x509.Certificate
	pki   *testca.CA // the roots x509pop node certificates chain to
	keys  *keys.Memory
	stop  func()
	// agentTTL is the life of agent SVIDs (the CA backdates them 10s).
	agentTTL time.Duration
}

func newTestCA(t testing.TB, x509TTL time.Duration) *testCA {
	t.Helper()
	return newTestCAWith(t, x509TTL, 20*time.Second)
}

// newTestCAWith is newTestCA with the life of agent SVIDs.
func newTestCAWith(t testing.TB, x509TTL, agentTTL time.Duration) *testCA {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "sigil.db"))
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	km := keys.NewMemory()
	up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: filepath.Join(dir, "root.crt")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.New(ca.Config{TrustDomain: td, Store: st, Keys: km, Upstream: up, X509SVIDTTL: x509TTL})
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
	pki := testca.New(t, spiffeid.RequireTrustDomainFromString("corp.example"))
	tc := &testCA{t: t, dir: dir, addr: addr, store: st, ca: c, roots: roots, pki: pki, keys: km, agentTTL: agentTTL}
	tc.Start()
	t.Cleanup(func() { tc.Stop() })
	return tc
}

// Start serves the node API (agent SVIDs live 20s and are backdated 10s by the CA, so the agent renews its
// own SVID during the test) until Stop.
func (tc *testCA) Start() {
	t := tc.t
	t.Helper()
	jt, err := canodeattest.NewJoinToken(td, tc.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	xp, err := canodeattest.NewX509PoP(canodeattest.X509PoPConfig{TrustDomain: td, Roots: tc.pki.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	node, err := nodeapi.New(nodeapi.Config{
		TrustDomain: td, Store: tc.store, CA: tc.ca, Attestors: []canodeattest.Attestor{jt, xp},
		AgentSVIDTTL: tc.agentTTL, PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		AdminSocket: filepath.Join(tc.dir, "admin.sock"), ServerAddress: tc.addr,
		Services: []server.Registrar{node}, Identity: tc.ca,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	go func() { _ = node.Run(ctx); done <- struct{}{} }()
	// The CA renews its own serving SVID as `sigil ca run` does.
	go func() { _ = tc.ca.Run(ctx, time.Second); done <- struct{}{} }()
	tc.stop = func() { cancel(); <-done; <-done; <-done }
	// Wait until the port answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", tc.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node api did not listen on %s: %v", tc.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tc *testCA) Stop() {
	if tc.stop != nil {
		tc.stop()
		tc.stop = nil
	}
}

func (tc *testCA) token(t testing.TB) string {
	t.Helper()
	tok := "tok" + strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
	if err := tc.store.CreateJoinToken(context.Background(), "test", store.JoinToken{Token: tok, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return tok
}

func (tc *testCA) entry(t testing.TB, parent, id string, sels ...string) store.Entry {
	t.Helper()
	parsed, err := selector.ParseAll(sels)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tc.store.CreateEntries(context.Background(), "test", []store.Entry{{SPIFFEID: id, ParentID: parent, Selectors: parsed}})
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func (tc *testCA) attestations(t *testing.T) int {
	t.Helper()
	evs, err := tc.store.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Action == "agent.attest" && !strings.Contains(ev.Details, "refused") {
			n++
		}
	}
	return n
}

// runAgent runs an agent until the test ends or stop is called; errc
// receives what Run returned.
func runAgent(t testing.TB, tc *testCA, dataDir, token string, mods ...func(*agent.Config)) (a *agent.Agent, reg *prometheus.Registry, stop func(), errc <-chan error) {
	t.Helper()
	reg = prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, bench := t.(*testing.B); bench {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := agent.Config{
		TrustDomain: td, ServerAddress: tc.addr, DataDir: dataDir, BootstrapBundle: tc.roots,
		Attestor: nodeattest.JoinToken{Token: token}, Metrics: reg,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		Logger: logger,
	}
	for _, m := range mods {
		m(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = a.Run(ctx)
		ch <- runErr
		close(done)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
			if runErr != nil && !errors.Is(runErr, agent.ErrTokenUsed) {
				t.Errorf("agent Run: %v", runErr)
			}
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop within 10s")
		}
	}
	t.Cleanup(stop)
	return a, reg, stop, ch
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func sels(ss ...string) selector.Set {
	p, err := selector.ParseAll(ss)
	if err != nil {
		panic(err)
	}
	return selector.NewSet(p...)
}

// waitFor reads updates until ok accepts one, failing after a generous
// timeout (never a timing assertion: only a bound on a hung test).
func waitFor(t *testing.T, sub workload.Subscription, what string, ok func(workload.Update) bool) workload.Update {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case u := <-sub.Updates():
			if ok(u) {
				return u
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func hasID(id string) func(workload.Update) bool {
	return func(u workload.Update) bool {
		return len(u.Identities) == 1 && u.Identities[0].SVID.ID.String() == id
	}
}

func TestAgentAgainstCA(t *testing.T) {
	tc := newTestCA(t, 20*time.Second)
	tok := tc.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	tc.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	db := tc.entry(t, agentID, "spiffe://example.org/db", "unix:uid:2000")
	tc.entry(t, "spiffe://example.org/sigil/agent/join_token/someone-else", "spiffe://example.org/other", "unix:uid:1000")
	dataDir := filepath.Join(t.TempDir(), "agent")

	a, reg, stop, _ := runAgent(t, tc, dataDir, tok)
	web := a.Cache().Subscribe(sels("unix:uid:1000", "unix:gid:1000"))
	defer web.Close()
	dbSub := a.Cache().Subscribe(sels("unix:uid:2000"))
	defer dbSub.Close()

	first := waitFor(t, web, "the web SVID", hasID("spiffe://example.org/web"))
	if u := waitFor(t, dbSub, "the db SVID", hasID("spiffe://example.org/db")); u.Bundle == nil || len(u.Bundle.X509Authorities()) == 0 {
		t.Fatal("update without our bundle")
	}
	if id, ok := a.ID(); !ok || id.String() != agentID {
		t.Fatalf("agent ID = %v", id)
	}
	if err := a.Ready(context.Background()); err != nil {
		t.Fatalf("not ready: %v", err)
	}
	st, err := os.Stat(filepath.Join(dataDir, svidstore.FileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("persisted identity: %v, %v", st, err)
	}

	t.Run("rotation", func(t *testing.T) {
		serial := first.Identities[0].SVID.Certificates[0].SerialNumber
		waitFor(t, web, "a rotated web SVID", func(u workload.Update) bool {
			return len(u.Identities) == 1 && u.Identities[0].SVID.Certificates[0].SerialNumber.Cmp(serial) != 0
		})
		if n := value(t, reg, "sigil_agent_svid_rotations_total", ""); n < 1 {
			t.Errorf("rotations = %v", n)
		}
	})

	t.Run("entry deletion reaches the subscriber", func(t *testing.T) {
		if _, err := tc.store.DeleteEntry(context.Background(), "test", db.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, dbSub, "the db SVID to go", func(u workload.Update) bool { return len(u.Identities) == 0 })
	})

	t.Run("CA stopped, then started again", func(t *testing.T) {
		tc.Stop()
		now := a.Cache().Subscribe(sels("unix:uid:1000"))
		held := waitFor(t, now, "the current web SVID", hasID("spiffe://example.org/web")).Identities[0].SVID
		now.Close()
		time.Sleep(1500 * time.Millisecond)
		// Nothing was taken away while the CA was down.
		sub := a.Cache().Subscribe(sels("unix:uid:1000"))
		u := <-sub.Updates()
		sub.Close()
		if !hasID("spiffe://example.org/web")(u) {
			t.Fatalf("identities while the CA is down: %d", len(u.Identities))
		}
		if time.Now().After(u.Identities[0].SVID.Certificates[0].NotAfter) {
			t.Fatal("served an expired SVID")
		}
		tc.Start()
		waitFor(t, web, "rotation after the CA came back", func(u workload.Update) bool {
			return len(u.Identities) == 1 && u.Identities[0].SVID.Certificates[0].SerialNumber.Cmp(held.Certificates[0].SerialNumber) != 0 &&
				u.Identities[0].SVID.Certificates[0].NotBefore.After(held.Certificates[0].NotBefore)
		})
		if n := value(t, reg, "sigil_agent_sync_reconnects_total", ""); n < 1 {
			t.Errorf("sync reconnects = %v", n)
		}
	})

	t.Run("agent renewed its own SVID", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for value(t, reg, "sigil_agent_svid_renewals_total", "ok") < 1 {
			if time.Now().After(deadline) {
				t.Fatal("no agent SVID renewal")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("restart serves again without attesting", func(t *testing.T) {
		before := tc.attestations(t)
		if before != 1 {
			t.Fatalf("%d attestations before restart, want 1", before)
		}
		stop()
		a2, _, _, _ := runAgent(t, tc, dataDir, tok)
		sub := a2.Cache().Subscribe(sels("unix:uid:1000"))
		defer sub.Close()
		waitFor(t, sub, "the web SVID after restart", hasID("spiffe://example.org/web"))
		if after := tc.attestations(t); after != before {
			t.Errorf("attestations %d -> %d across a restart", before, after)
		}
	})
}

func TestEvictedAgentWithUsedJoinToken(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	tok := tc.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	tc.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	a, _, _, errc := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok)
	sub := a.Cache().Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	waitFor(t, sub, "the web SVID", hasID("spiffe://example.org/web"))

	if err := tc.store.DeleteAgent(context.Background(), "test", agentID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, agent.ErrTokenUsed) {
			t.Fatalf("Run = %v, want ErrTokenUsed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not notice its eviction")
	}
}

func TestBootstrapErrors(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	tests := []struct {
		name    string
		cfg     func(c *agent.Config)
		wantErr string
	}{
		{name: "no attestor", cfg: func(c *agent.Config) { c.Attestor = nil }, wantErr: "no node attestor"},
		{name: "no bundle", cfg: func(c *agent.Config) { c.BootstrapBundle = nil }, wantErr: "trust_bundle_file"},
		{name: "unknown token", cfg: func(c *agent.Config) { c.Attestor = nodeattest.JoinToken{Token: "nope"} }, wantErr: "sigil token create"},
		{name: "wrong CA roots", cfg: func(c *agent.Config) { c.BootstrapBundle = otherRoots(t) }, wantErr: "x509"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := agent.Config{
				TrustDomain: td, ServerAddress: tc.addr, DataDir: t.TempDir(), BootstrapBundle: tc.roots,
				Attestor: nodeattest.JoinToken{Token: tc.token(t)}, RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond,
			}
			tt.cfg(&cfg)
			a, err := agent.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err = a.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// x509popNode issues a node certificate under the test PKI and returns the
// x509pop attestor holding it and the agent ID it attests as.
func x509popNode(t *testing.T, tc *testCA) (*nodeattest.X509PoP, string) {
	t.Helper()
	node := tc.pki.Issue(t, "spiffe://corp.example/node-1")
	pop, err := nodeattest.NewX509PoP(node.Certificates, node.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(node.Certificates[0].Raw)
	return pop, "spiffe://example.org/sigil/agent/x509pop/" + hex.EncodeToString(sum[:])
}

func TestX509PoPAttestsAgainAfterEviction(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	pop, agentID := x509popNode(t, tc)
	tc.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	a, reg, _, _ := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), "", func(c *agent.Config) { c.Attestor = pop })
	sub := a.Cache().Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	waitFor(t, sub, "the web SVID", hasID("spiffe://example.org/web"))

	if err := tc.store.DeleteAgent(context.Background(), "test", agentID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for value(t, reg, "sigil_agent_attestations_total", "ok") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not attest again after its eviction")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := tc.attestations(t); n != 2 {
		t.Errorf("%d attestations on the CA, want 2", n)
	}
	// It keeps serving, and gets new SVIDs as the re-attested agent.
	if _, err := tc.store.CreateEntries(context.Background(), "test", []store.Entry{{SPIFFEID: "spiffe://example.org/web2", ParentID: agentID, Selectors: mustSels(t, "unix:uid:1000", "unix:gid:5")}}); err != nil {
		t.Fatal(err)
	}
	sub2 := a.Cache().Subscribe(sels("unix:uid:1000", "unix:gid:5"))
	defer sub2.Close()
	waitFor(t, sub2, "both SVIDs after re-attesting", func(u workload.Update) bool { return len(u.Identities) == 2 })
}

func TestTaintedKeyReissuesAtOnce(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	tok := tc.token(t)
	tc.entry(t, "spiffe://example.org/sigil/agent/join_token/"+tok, "spiffe://example.org/web", "unix:uid:1000")
	a, _, _, _ := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok)
	sub := a.Cache().Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	first := waitFor(t, sub, "the web SVID", hasID("spiffe://example.org/web")).Identities[0].SVID

	ctx := context.Background()
	st, err := tc.ca.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var old string
	for _, k := range st.Keys {
		if k.Kind == ca.X509 && k.State == ca.Active {
			old = k.ID
		}
	}
	if _, err := tc.ca.Prepare(ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ca.Activate(ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if err := tc.ca.Taint(ctx, ca.X509, old); err != nil {
		t.Fatal(err)
	}
	u := waitFor(t, sub, "a web SVID from the new key", func(u workload.Update) bool {
		return len(u.Identities) == 1 && !bytes.Equal(u.Identities[0].SVID.Certificates[1].Raw, first.Certificates[1].Raw)
	})
	// An hour-long SVID is nowhere near rotation: only the taint explains it.
	if got := u.Identities[0].SVID.Certificates[0].NotAfter.Sub(first.Certificates[0].NotAfter); got > 10*time.Minute {
		t.Errorf("unexpected lifetime change %v", got)
	}
}

func mustSels(t *testing.T, ss ...string) []selector.Selector {
	t.Helper()
	p, err := selector.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
