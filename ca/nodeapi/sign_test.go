package nodeapi_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestAgentCannotGetOtherAgentsEntries(t *testing.T) {
	e := newEnv(t)
	a, b := e.joinAgent(t), e.joinAgent(t)
	mine := e.entry(t, "spiffe://example.org/a/web", a.id)
	theirs := e.entry(t, "spiffe://example.org/b/db", b.id)

	t.Run("sign", func(t *testing.T) {
		res, err := sign(t, a, csrFor(t, mine), csrFor(t, theirs), &nodev1.CSRForEntry{EntryId: "no-such-entry", Csr: csr(t, newKey(t), theirs.SPIFFEID)})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].GetError() != "" || len(res[0].GetCertChain()) == 0 {
			t.Fatalf("own entry refused: %v", res[0])
		}
		for _, r := range res[1:] {
			if len(r.GetCertChain()) != 0 || !strings.Contains(r.GetError(), "does not exist or is not authorized for agent "+a.id) {
				t.Fatalf("other agent's or unknown entry: %v", r)
			}
		}
		// B still gets its own.
		res, err = sign(t, b, csrFor(t, theirs))
		if err != nil || res[0].GetError() != "" {
			t.Fatalf("b's own entry: %v %v", err, res)
		}
	})
	t.Run("jwt", func(t *testing.T) {
		_, err := a.client.MintJWTSVID(e.ctx, &nodev1.MintJWTSVIDRequest{EntryId: theirs.ID, Audience: []string{"db"}})
		wantCode(t, err, codes.PermissionDenied, "not authorized")
		if _, err := a.client.MintJWTSVID(e.ctx, &nodev1.MintJWTSVIDRequest{EntryId: mine.ID, Audience: []string{"db"}}); err != nil {
			t.Fatalf("own entry: %v", err)
		}
	})
	t.Run("audit and metrics", func(t *testing.T) {
		evs, err := e.store.ListAudit(e.ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(evs, func(ev store.AuditEvent) bool { return ev.Action == "svid.sign" && ev.Actor == a.id })
		if i < 0 {
			t.Fatal("no svid.sign audit event for agent a")
		}
		var d struct {
			Signed []struct {
				EntryID string `json:"entry_id"`
				Serial  string `json:"serial"`
			} `json:"signed"`
			Refused int `json:"refused"`
		}
		if err := json.Unmarshal([]byte(evs[i].Details), &d); err != nil {
			t.Fatal(err)
		}
		if len(d.Signed) != 1 || d.Signed[0].EntryID != mine.ID || d.Signed[0].Serial == "" || d.Refused != 2 {
			t.Fatalf("audit details %s", evs[i].Details)
		}
		if n := counter(t, e, "sigil_node_svids_total", "x509", "refused"); n != 2 {
			t.Fatalf("refused x509 count %v, want 2", n)
		}
	})
}

func TestCSRNotForTheEntry(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	w := e.entry(t, "spiffe://example.org/web", a.id)
	e.entry(t, "spiffe://example.org/admin-tool", a.id)
	forged := csr(t, newKey(t), w.SPIFFEID)
	forged[len(forged)-3] ^= 0xff
	tests := []struct {
		name string
		csr  []byte
		msg  string
	}{
		{name: "other spiffe id", csr: csr(t, newKey(t), "spiffe://example.org/admin-tool"), msg: "csr is for spiffe://example.org/admin-tool but entry " + w.ID + " is for spiffe://example.org/web"},
		{name: "two uris", csr: csr(t, newKey(t), w.SPIFFEID, "spiffe://example.org/admin-tool"), msg: "exactly one URI SAN"},
		{name: "no uri", csr: csr(t, newKey(t)), msg: "exactly one URI SAN"},
		{name: "foreign trust domain", csr: csr(t, newKey(t), "spiffe://evil.org/web"), msg: "not in trust domain"},
		{name: "forged signature", csr: forged, msg: "invalid csr"},
		{name: "not a csr", csr: []byte("hello"), msg: "invalid csr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := sign(t, a, &nodev1.CSRForEntry{EntryId: w.ID, Csr: tt.csr})
			if err != nil {
				t.Fatal(err)
			}
			if len(res[0].GetCertChain()) != 0 || !strings.Contains(res[0].GetError(), tt.msg) {
				t.Fatalf("result %v, want error mentioning %q", res[0], tt.msg)
			}
		})
	}
}

func TestSignUsesEntryTTLAndDNSNames(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	sels, _ := selector.ParseAll([]string{"unix:uid:1000"})
	created, err := e.store.CreateEntries(e.ctx, "test", []store.Entry{{
		SPIFFEID: "spiffe://example.org/web", ParentID: a.id, Selectors: sels, X509TTL: 10 * time.Minute, DNSNames: []string{"web.example.org"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	w := created[0]
	key := newKey(t)
	res, err := sign(t, a, &nodev1.CSRForEntry{EntryId: w.ID, Csr: csr(t, key, w.SPIFFEID)})
	if err != nil || res[0].GetError() != "" {
		t.Fatalf("%v %v", err, res)
	}
	svid, err := svidFrom(res[0].GetCertChain(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, e.roots)); err != nil {
		t.Fatalf("svid does not verify: %v", err)
	}
	leaf := svid.Certificates[0]
	if life := leaf.NotAfter.Sub(e.clock.Now()); life > 10*time.Minute+time.Second || life < 9*time.Minute {
		t.Fatalf("svid lives %s, want the entry's 10m", life)
	}
	if !slices.Equal(leaf.DNSNames, []string{"web.example.org"}) || res[0].GetCaKeyId() == "" {
		t.Fatalf("dns names %v, ca key %q", leaf.DNSNames, res[0].GetCaKeyId())
	}
	// The SVID names its entry (admin rights follow it); the agent's own
	// SVID names none, so no entry's rights can ever reach an agent.
	if got := ca.EntryIDFromCert(leaf); got != w.ID {
		t.Fatalf("svid names entry %q, want %q", got, w.ID)
	}
	if got := ca.EntryIDFromCert(a.svid.Certificates[0]); got != "" {
		t.Fatalf("agent svid names entry %q, want none", got)
	}
}

func TestReservedIDsAreNeverSigned(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	// The admin API refuses such entries; one written to the store directly
	// must still not yield the CA's identity or another agent's.
	for _, id := range []string{caID.String(), "spiffe://example.org/sigil/agent/join_token/other"} {
		w := e.entry(t, id, a.id)
		res, err := sign(t, a, &nodev1.CSRForEntry{EntryId: w.ID, Csr: csr(t, newKey(t), id)})
		if err != nil {
			t.Fatal(err)
		}
		if len(res[0].GetCertChain()) != 0 || !strings.Contains(res[0].GetError(), "not authorized") {
			t.Fatalf("%s: %v", id, res[0])
		}
	}
}

func TestSignBatchLimits(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	_, err := sign(t, a)
	wantCode(t, err, codes.InvalidArgument, "csrs is empty")
}

func TestNodeAliasAuthorization(t *testing.T) {
	e := newEnv(t)
	n1, err := e.attest(t, e.nodeAttestor(t, "node-1", nil))
	if err != nil {
		t.Fatal(err)
	}
	n2, err := e.attest(t, e.nodeAttestor(t, "node-2", nil))
	if err != nil {
		t.Fatal(err)
	}
	j := e.joinAgent(t)
	alias := e.entry(t, "spiffe://example.org/nodes/web-tier", caID.String(), "x509pop:subject:cn:node-1")
	child := e.entry(t, "spiffe://example.org/web", alias.SPIFFEID)
	for _, tt := range []struct {
		name    string
		agent   *agent
		allowed bool
	}{
		{name: "matching node", agent: n1, allowed: true},
		{name: "other node", agent: n2},
		{name: "join token agent", agent: j},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := sign(t, tt.agent, csrFor(t, alias), csrFor(t, child))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if got := r.GetError() == ""; got != tt.allowed {
					t.Fatalf("entry %s: allowed=%v, want %v (%s)", r.GetEntryId(), got, tt.allowed, r.GetError())
				}
			}
			_, err = tt.agent.client.MintJWTSVID(e.ctx, &nodev1.MintJWTSVIDRequest{EntryId: child.ID, Audience: []string{"x"}})
			if (err == nil) != tt.allowed {
				t.Fatalf("jwt for child: err = %v, allowed %v", err, tt.allowed)
			}
		})
	}
}

func TestMintJWTSVID(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	sels, _ := selector.ParseAll([]string{"unix:uid:1000"})
	created, err := e.store.CreateEntries(e.ctx, "test", []store.Entry{{SPIFFEID: "spiffe://example.org/web", ParentID: a.id, Selectors: sels, JWTTTL: 2 * time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := a.client.MintJWTSVID(e.ctx, &nodev1.MintJWTSVIDRequest{EntryId: created[0].ID, Audience: []string{"db", "cache"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwtsvid.ParseInsecure(resp.GetToken(), []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID.String() != "spiffe://example.org/web" || !tok.Expiry.Equal(resp.GetExpiresAt().AsTime()) {
		t.Fatalf("token for %s expiring %s, response says %s", tok.ID, tok.Expiry, resp.GetExpiresAt().AsTime())
	}
	if life := tok.Expiry.Sub(e.clock.Now()); life > 2*time.Minute+time.Second || life < time.Minute {
		t.Fatalf("jwt lives %s, want the entry's 2m", life)
	}
	_, err = a.client.MintJWTSVID(e.ctx, &nodev1.MintJWTSVIDRequest{EntryId: created[0].ID})
	wantCode(t, err, codes.InvalidArgument, "audiences")
}
