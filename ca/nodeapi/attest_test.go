package nodeapi_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	agentattest "github.com/sigilhq/sigil/agent/nodeattest"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeapi"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
)

// checkAgent verifies a's SVID against the CA's bundle and its store record.
func checkAgent(t *testing.T, e *env, a *agent, wantType string) store.Agent {
	t.Helper()
	if _, _, err := x509svid.Verify(a.svid.Certificates, x509bundle.FromX509Authorities(td, e.roots)); err != nil {
		t.Fatalf("agent svid does not verify: %v", err)
	}
	rec, err := e.store.GetAgent(e.ctx, a.id)
	if err != nil {
		t.Fatal(err)
	}
	leaf := a.svid.Certificates[0]
	if rec.AttestationType != wantType || rec.Serial != leaf.SerialNumber.Text(16) || !rec.ExpiresAt.Equal(leaf.NotAfter) || rec.Banned {
		t.Fatalf("agent record %+v does not match svid serial %s expiring %s", rec, leaf.SerialNumber.Text(16), leaf.NotAfter)
	}
	evs, err := e.store.ListAudit(e.ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(ev store.AuditEvent) bool {
		return ev.Action == "agent.attest" && ev.Actor == a.id && ev.Target == a.id
	}) {
		t.Fatalf("no agent.attest audit event for %s", a.id)
	}
	return rec
}

func TestAttestJoinToken(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, time.Hour)
	a, err := e.attest(t, agentattest.JoinToken{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://example.org/sigil/agent/join_token/" + tok; a.id != want {
		t.Fatalf("agent id %s, want %s (the CSR's URI must be ignored)", a.id, want)
	}
	checkAgent(t, e, a, "join_token")
	// The agent's SVID works for authenticated calls.
	if _, err := a.client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))}); err != nil {
		t.Fatalf("renew with the new svid: %v", err)
	}
}

func TestAttestX509PoP(t *testing.T) {
	e := newEnv(t)
	att := e.nodeAttestor(t, "node-1", nil)
	a, err := e.attest(t, att)
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(att.Params().GetCertificates()[0])
	if want := "spiffe://example.org/sigil/agent/x509pop/" + hex.EncodeToString(fp[:]); a.id != want {
		t.Fatalf("agent id %s, want %s", a.id, want)
	}
	rec := checkAgent(t, e, a, "x509pop")
	rootFP := sha256.Sum256(e.pki.Roots()[0].Raw)
	sels := selector.Strings(rec.Selectors)
	for _, want := range []string{"x509pop:subject:cn:node-1", "x509pop:ca:fingerprint:" + hex.EncodeToString(rootFP[:])} {
		if !slices.Contains(sels, want) {
			t.Fatalf("node selectors %v lack %s", sels, want)
		}
	}
}

func TestAttestReusedJoinToken(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, time.Hour)
	if _, err := e.attest(t, agentattest.JoinToken{Token: tok}); err != nil {
		t.Fatal(err)
	}
	_, err := e.attest(t, agentattest.JoinToken{Token: tok})
	wantCode(t, err, codes.PermissionDenied, "unknown or was already used")
}

func TestAttestExpiredJoinToken(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, time.Minute)
	e.clock.Advance(2 * time.Minute)
	_, err := e.attest(t, agentattest.JoinToken{Token: tok})
	wantCode(t, err, codes.PermissionDenied, "join token expired")
}

func TestAttestX509PoPWrongKey(t *testing.T) {
	e := newEnv(t)
	victim := e.nodeAttestor(t, "victim", nil)
	thief := e.nodeAttestor(t, "thief", nil)
	// The thief sends the victim's certificate but can only sign with its own key.
	_, err := e.attest(t, stolen{params: victim.Params(), answer: thief})
	wantCode(t, err, codes.PermissionDenied, "not a signature by the certificate's key")
}

// stolen sends someone else's certificates and answers with another key.
type stolen struct {
	params *nodev1.AttestParams
	answer agentattest.Attestor
}

func (s stolen) Params() *nodev1.AttestParams        { return s.params }
func (s stolen) Answer(nonce []byte) ([]byte, error) { return s.answer.Answer(nonce) }

func TestAttestX509PoPUntrustedRoot(t *testing.T) {
	e := newEnv(t)
	foreign := testca.New(t, corpTD)
	_, err := e.attest(t, e.nodeAttestor(t, "node-1", foreign))
	wantCode(t, err, codes.PermissionDenied, "does not chain to a trusted root")
}

func TestAttestBadInput(t *testing.T) {
	e := newEnv(t)
	key := newKey(t)
	forged := csr(t, key)
	forged[len(forged)-3] ^= 0xff // break the CSR's signature
	tests := []struct {
		name   string
		params *nodev1.AttestParams
		msg    string
	}{
		{name: "unknown type", params: &nodev1.AttestParams{Type: "k8s_psat", Csr: csr(t, key)}, msg: `unknown attestation type "k8s_psat"`},
		{name: "no csr", params: &nodev1.AttestParams{Type: "join_token", Token: e.token(t, time.Hour)}, msg: "csr is required"},
		{name: "forged csr", params: &nodev1.AttestParams{Type: "join_token", Token: e.token(t, time.Hour), Csr: forged}, msg: "csr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := e.dial(t, nil).Attest(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&nodev1.AttestRequest{Step: &nodev1.AttestRequest_Params{Params: tt.params}}); err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			wantCode(t, err, codes.InvalidArgument, tt.msg)
			// A bad CSR must not burn the token.
			if tok := tt.params.GetToken(); tok != "" {
				if _, err := e.attest(t, agentattest.JoinToken{Token: tok}); err != nil {
					t.Fatalf("token unusable after a refused CSR: %v", err)
				}
			}
		})
	}
}

func TestEvictedAgent(t *testing.T) {
	e := newEnv(t)
	node := e.nodeAttestor(t, "node-1", nil)
	a, err := e.attest(t, node)
	if err != nil {
		t.Fatal(err)
	}
	j := e.joinAgent(t)
	for _, ag := range []*agent{a, j} {
		if err := e.store.DeleteAgent(e.ctx, "test", ag.id); err != nil {
			t.Fatal(err)
		}
		_, err = ag.client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))})
		wantCode(t, err, codes.PermissionDenied, "not attested")
		_, err = sign(t, ag, &nodev1.CSRForEntry{EntryId: "x", Csr: csr(t, newKey(t), "spiffe://example.org/w")})
		wantCode(t, err, codes.PermissionDenied, "not attested")
	}
	// Re-attesting works: the same node certificate gives the same ID, a new token a new one.
	again, err := e.attest(t, node)
	if err != nil {
		t.Fatalf("re-attest after eviction: %v", err)
	}
	if again.id != a.id {
		t.Fatalf("re-attested as %s, was %s", again.id, a.id)
	}
	checkAgent(t, e, again, "x509pop")
	if _, err := again.client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))}); err != nil {
		t.Fatal(err)
	}
	e.joinAgent(t)
}

func TestBannedAgent(t *testing.T) {
	e := newEnv(t)
	node := e.nodeAttestor(t, "node-1", nil)
	a, err := e.attest(t, node)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.store.GetAgent(e.ctx, a.id)
	if err != nil {
		t.Fatal(err)
	}
	rec.Banned = true
	if _, err := e.store.UpdateAgent(e.ctx, "test", rec); err != nil { // keeps the serial: the ban alone must refuse
		t.Fatal(err)
	}
	_, err = a.client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))})
	wantCode(t, err, codes.PermissionDenied, "is banned")
	_, err = e.attest(t, node)
	wantCode(t, err, codes.PermissionDenied, "is banned")
}

func TestExpiredAgentSVID(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	w := e.entry(t, "spiffe://example.org/w", a.id)
	e.clock.Advance(2 * time.Hour) // agent SVIDs live 1h
	_, err := sign(t, a, csrFor(t, w))
	wantCode(t, err, codes.Unauthenticated, "not valid now")
	_, err = a.client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))})
	wantCode(t, err, codes.Unauthenticated, "not valid now")
}

func TestSupersededAgentSVID(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	w := e.entry(t, "spiffe://example.org/w", a.id)
	key := newKey(t)
	resp, err := a.client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := svidFrom(resp.GetSvid().GetCertChain(), key)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != a.id || svid.Certificates[0].SerialNumber.Cmp(a.svid.Certificates[0].SerialNumber) == 0 {
		t.Fatalf("renewed svid %s serial %s", svid.ID, svid.Certificates[0].SerialNumber)
	}
	rec, _ := e.store.GetAgent(e.ctx, a.id)
	if rec.Serial != svid.Certificates[0].SerialNumber.Text(16) {
		t.Fatalf("store serial %s, want the renewed one", rec.Serial)
	}
	_, err = sign(t, a, csrFor(t, w))
	wantCode(t, err, codes.PermissionDenied, "not the current one")
	renewed := &agent{id: a.id, svid: svid, client: e.dial(t, svid)}
	res, err := sign(t, renewed, csrFor(t, w))
	if err != nil || res[0].GetError() != "" {
		t.Fatalf("sign with the renewed svid: %v %v", err, res)
	}
}

func TestForeignClientCertificate(t *testing.T) {
	e := newEnv(t)
	foreign := testca.New(t, td) // same trust domain name, different root
	impostor := foreign.Issue(t, "spiffe://example.org/sigil/agent/join_token/abc")
	client := e.dial(t, impostor)
	_, err := client.RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))})
	if err == nil {
		t.Fatal("a client certificate from a foreign CA was accepted")
	}
	wantCode(t, err, codes.Unavailable)
}

func TestNoClientCertificate(t *testing.T) {
	e := newEnv(t)
	_, err := e.dial(t, nil).RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))})
	wantCode(t, err, codes.Unauthenticated, "verified client X509-SVID is required")
}

func TestWorkloadSVIDIsNotAnAgent(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	w := e.entry(t, "spiffe://example.org/w", a.id)
	key := newKey(t)
	res, err := sign(t, a, &nodev1.CSRForEntry{EntryId: w.ID, Csr: csr(t, key, w.SPIFFEID)})
	if err != nil || res[0].GetError() != "" {
		t.Fatalf("sign: %v %v", err, res)
	}
	svid, err := svidFrom(res[0].GetCertChain(), key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.dial(t, svid).RenewAgent(e.ctx, &nodev1.RenewAgentRequest{Csr: csr(t, newKey(t))})
	wantCode(t, err, codes.PermissionDenied, "is not an agent ID")
}

func TestAttestSilentClientTimesOut(t *testing.T) {
	e := newEnv(t, func(c *nodeapi.Config) { c.AttestTimeout = 300 * time.Millisecond })
	node := e.nodeAttestor(t, "node-1", nil)
	t.Run("no params", func(t *testing.T) {
		stream, err := e.dial(t, nil).Attest(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantCode(t, err, codes.DeadlineExceeded, "took too long")
	})
	t.Run("no challenge response", func(t *testing.T) {
		stream, err := e.dial(t, nil).Attest(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := node.Params()
		p.Csr = csr(t, newKey(t))
		if err := stream.Send(&nodev1.AttestRequest{Step: &nodev1.AttestRequest_Params{Params: p}}); err != nil {
			t.Fatal(err)
		}
		if r, err := stream.Recv(); err != nil || len(r.GetChallenge()) < 32 {
			t.Fatalf("want a challenge, got %v %v", r, err)
		}
		_, err = stream.Recv()
		wantCode(t, err, codes.PermissionDenied, "no challenge response", "took too long")
	})
}

func TestJoinTokenRace(t *testing.T) {
	e := newEnv(t)
	tok := e.token(t, time.Hour)
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := e.attest(t, agentattest.JoinToken{Token: tok})
			errs <- err
		}()
	}
	ok := 0
	for range n {
		if err := <-errs; err == nil {
			ok++
		} else {
			wantCode(t, err, codes.PermissionDenied, "already used")
		}
	}
	if ok != 1 {
		t.Fatalf("%d attestations succeeded with one token, want 1", ok)
	}
}

func TestOtherServicesLeftAlone(t *testing.T) {
	e := newEnv(t)
	// The interceptors only guard /sigil.node.v1.Node/: a health check on
	// the same server needs no agent SVID.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(e.srv.ServerOptions(), grpc.Creds(credentials.NewTLS(serverTLS(e.ca))))...)
	e.srv.Register(gs)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, e.roots), tlsconfig.AuthorizeID(caID)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := healthpb.NewHealthClient(conn).Check(e.ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check: %v", err)
	}
	_, err = nodev1.NewNodeClient(conn).RenewAgent(e.ctx, &nodev1.RenewAgentRequest{})
	wantCode(t, err, codes.Unauthenticated)
}
