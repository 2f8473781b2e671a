package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
)

const (
	agentID = "spiffe://example.org/sigil/agent/join_token/abc"
	cartID  = "spiffe://example.org/ns/shop/sa/cart"
)

func cartEntry() *typesv1.Entry {
	return &typesv1.Entry{
		SpiffeId:      cartID,
		ParentId:      agentID,
		Selectors:     []string{"unix:uid:1000", "unix:gid:1000"},
		X509Ttl:       durationpb.New(time.Hour),
		JwtTtl:        durationpb.New(5 * time.Minute),
		DnsNames:      []string{"cart.shop.svc"},
		FederatesWith: []string{"partner.org"},
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	created, err := e.client.CreateEntries(ctx, &adminv1.CreateEntriesRequest{Entries: []*typesv1.Entry{cartEntry()}})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if len(created.GetEntries()) != 1 {
		t.Fatalf("created %d entries, want 1", len(created.GetEntries()))
	}
	c := created.GetEntries()[0]
	if c.GetId() == "" || c.GetRevision() == 0 {
		t.Fatalf("created entry has no id or revision: %v", c)
	}
	if want := []string{"unix:gid:1000", "unix:uid:1000"}; !slices.Equal(c.GetSelectors(), want) {
		t.Fatalf("selectors %v, want normalized %v", c.GetSelectors(), want)
	}

	got, err := e.client.GetEntry(ctx, &adminv1.GetEntryRequest{Id: c.GetId()})
	if err != nil {
		t.Fatalf("GetEntry: %v", err)
	}
	g := got.GetEntry()
	if g.GetSpiffeId() != cartID || g.GetParentId() != agentID || g.GetX509Ttl().AsDuration() != time.Hour ||
		g.GetJwtTtl().AsDuration() != 5*time.Minute || !slices.Equal(g.GetDnsNames(), []string{"cart.shop.svc"}) ||
		!slices.Equal(g.GetFederatesWith(), []string{"partner.org"}) || g.GetAdmin() || g.GetDownstream() {
		t.Fatalf("GetEntry = %v", g)
	}

	for _, tt := range []struct {
		name string
		req  *adminv1.ListEntriesRequest
		want int
	}{
		{"all", &adminv1.ListEntriesRequest{}, 1},
		{"by parent", &adminv1.ListEntriesRequest{ParentId: agentID}, 1},
		{"by other parent", &adminv1.ListEntriesRequest{ParentId: "spiffe://example.org/other"}, 0},
		{"by spiffe id", &adminv1.ListEntriesRequest{SpiffeId: cartID}, 1},
		{"by other spiffe id", &adminv1.ListEntriesRequest{SpiffeId: "spiffe://example.org/other"}, 0},
	} {
		t.Run("list "+tt.name, func(t *testing.T) {
			l, err := e.client.ListEntries(ctx, tt.req)
			if err != nil {
				t.Fatalf("ListEntries: %v", err)
			}
			if len(l.GetEntries()) != tt.want {
				t.Fatalf("got %d entries, want %d", len(l.GetEntries()), tt.want)
			}
		})
	}

	upd := g
	upd.Admin = true
	upd.Selectors = []string{"unix:uid:2000"}
	u, err := e.client.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: upd})
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	if !u.GetEntry().GetAdmin() || !slices.Equal(u.GetEntry().GetSelectors(), []string{"unix:uid:2000"}) || u.GetEntry().GetRevision() <= g.GetRevision() {
		t.Fatalf("UpdateEntry = %v", u.GetEntry())
	}
	// The revision read before the update is stale now.
	_, err = e.client.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: upd})
	wantCode(t, err, codes.Aborted, c.GetId())

	_, err = e.client.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: &typesv1.Entry{Id: "nope", SpiffeId: cartID, ParentId: agentID, Selectors: []string{"unix:uid:1"}}})
	wantCode(t, err, codes.NotFound, "nope")

	d, err := e.client.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: c.GetId()})
	if err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	if d.GetEntry().GetSpiffeId() != cartID {
		t.Fatalf("DeleteEntry returned %v", d.GetEntry())
	}
	_, err = e.client.GetEntry(ctx, &adminv1.GetEntryRequest{Id: c.GetId()})
	wantCode(t, err, codes.NotFound, c.GetId())
	_, err = e.client.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: c.GetId()})
	wantCode(t, err, codes.NotFound)

	// The store recorded who did it.
	evs, err := e.client.ListAudit(ctx, &adminv1.ListAuditRequest{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	var actions []string
	for _, ev := range evs.GetEvents() {
		if ev.GetActor() != LocalAdmin {
			t.Errorf("audit event %v: actor %q, want %q", ev, ev.GetActor(), LocalAdmin)
		}
		actions = append(actions, ev.GetAction())
	}
	if want := []string{"entry.create", "entry.update", "entry.delete"}; !slices.Equal(actions, want) {
		t.Fatalf("audit actions %v, want %v", actions, want)
	}
}

func TestCreateEntriesValidation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.client.CreateEntries(ctx, &adminv1.CreateEntriesRequest{Entries: []*typesv1.Entry{cartEntry()}}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	with := func(f func(*typesv1.Entry)) *typesv1.Entry {
		en := cartEntry()
		en.SpiffeId = "spiffe://example.org/fresh"
		f(en)
		return en
	}
	tests := []struct {
		name    string
		entries []*typesv1.Entry
		code    codes.Code
		parts   []string
	}{
		{"no entries", nil, codes.InvalidArgument, []string{"entries"}},
		{"foreign trust domain", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.SpiffeId = "spiffe://evil.org/x" })},
			codes.InvalidArgument, []string{"entries[0].spiffe_id", "example.org"}},
		{"foreign parent", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.ParentId = "spiffe://evil.org/agent" })},
			codes.InvalidArgument, []string{"entries[0].parent_id"}},
		{"malformed spiffe id", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.SpiffeId = "https://example.org/x" })},
			codes.InvalidArgument, []string{"entries[0].spiffe_id", "not a SPIFFE ID"}},
		{"query in spiffe id", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/x?a=b" })},
			codes.InvalidArgument, []string{"entries[0].spiffe_id"}},
		{"fragment in parent id", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.ParentId = "spiffe://example.org/x#y" })},
			codes.InvalidArgument, []string{"entries[0].parent_id"}},
		{"missing parent", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.ParentId = "" })},
			codes.InvalidArgument, []string{"entries[0].parent_id", "required"}},
		{"trust domain id", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org" })},
			codes.InvalidArgument, []string{"entries[0].spiffe_id", "path"}},
		{"ca id", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.SpiffeId = "spiffe://example.org/sigil/ca" })},
			codes.InvalidArgument, []string{"entries[0].spiffe_id", "reserved"}},
		{"agent id", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.SpiffeId = agentID + "x" })},
			codes.InvalidArgument, []string{"entries[0].spiffe_id", "reserved"}},
		{"own parent", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.ParentId = e.SpiffeId })},
			codes.InvalidArgument, []string{"entries[0].parent_id"}},
		{"no selectors", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.Selectors = nil })},
			codes.InvalidArgument, []string{"entries[0].selectors", "at least one"}},
		{"bad selector", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.Selectors = []string{"unix:uid:1", "nocolon"} })},
			codes.InvalidArgument, []string{"entries[0].selectors[1]", "nocolon"}},
		{"negative x509 ttl", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.X509Ttl = durationpb.New(-time.Second) })},
			codes.InvalidArgument, []string{"entries[0].x509_ttl", "negative"}},
		{"negative jwt ttl", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.JwtTtl = durationpb.New(-time.Second) })},
			codes.InvalidArgument, []string{"entries[0].jwt_ttl", "negative"}},
		{"x509 ttl too long", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.X509Ttl = durationpb.New(31 * 24 * time.Hour) })},
			codes.InvalidArgument, []string{"entries[0].x509_ttl", "maximum"}},
		{"bad dns name", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.DnsNames = []string{"ok.example", "bad_name.example"} })},
			codes.InvalidArgument, []string{"entries[0].dns_names[1]", "bad_name"}},
		{"bad federated trust domain", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.FederatesWith = []string{"Not A TD"} })},
			codes.InvalidArgument, []string{"entries[0].federates_with[0]"}},
		{"federates with ourselves", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.FederatesWith = []string{"example.org"} })},
			codes.InvalidArgument, []string{"entries[0].federates_with[0]", "own"}},
		{"id set by client", []*typesv1.Entry{with(func(e *typesv1.Entry) { e.Id = "mine" })},
			codes.InvalidArgument, []string{"entries[0].id"}},
		{"second entry bad", []*typesv1.Entry{with(func(*typesv1.Entry) {}), with(func(e *typesv1.Entry) { e.SpiffeId = "spiffe://evil.org/x" })},
			codes.InvalidArgument, []string{"entries[1].spiffe_id"}},
		{"duplicate of stored entry", []*typesv1.Entry{with(func(*typesv1.Entry) {}), cartEntry()},
			codes.AlreadyExists, []string{"already exists"}},
		{"duplicate within batch", []*typesv1.Entry{with(func(*typesv1.Entry) {}), with(func(*typesv1.Entry) {})},
			codes.AlreadyExists, []string{"already exists"}},
		{"single duplicate", []*typesv1.Entry{cartEntry()},
			codes.AlreadyExists, []string{cartID, agentID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.CreateEntries(ctx, &adminv1.CreateEntriesRequest{Entries: tt.entries})
			wantCode(t, err, tt.code, tt.parts...)
			l, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(l.GetEntries()) != 1 {
				t.Fatalf("store holds %d entries after a refused batch, want the 1 seeded", len(l.GetEntries()))
			}
		})
	}
}

func TestOtherValidation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() error
		parts []string
	}{
		{"update without id", func() error {
			_, err := e.client.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: cartEntry()})
			return err
		}, []string{"entry.id"}},
		{"update bad selector", func() error {
			en := cartEntry()
			en.Id = "x"
			en.Selectors = []string{"UNIX:uid:1"}
			_, err := e.client.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: en})
			return err
		}, []string{"entry.selectors[0]"}},
		{"get without id", func() error { _, err := e.client.GetEntry(ctx, &adminv1.GetEntryRequest{}); return err }, []string{"id", "required"}},
		{"list bad filter", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: "nope"})
			return err
		}, []string{"parent_id"}},
		{"token negative ttl", func() error {
			_, err := e.client.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Ttl: durationpb.New(-time.Minute)})
			return err
		}, []string{"ttl", "negative"}},
		{"evict foreign agent", func() error {
			_, err := e.client.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: "spiffe://evil.org/sigil/agent/x"})
			return err
		}, []string{"id", "example.org"}},
		{"set own bundle", func() error {
			_, err := e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "example.org", Format: adminv1.BundleFormat_BUNDLE_FORMAT_PEM, Data: []byte("x")})
			return err
		}, []string{"trust_domain", "own"}},
		{"delete own bundle", func() error {
			_, err := e.client.DeleteBundle(ctx, &adminv1.DeleteBundleRequest{TrustDomain: "spiffe://example.org"})
			return err
		}, []string{"trust_domain", "own"}},
		{"set bundle bad td", func() error {
			_, err := e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "Bad TD", Format: adminv1.BundleFormat_BUNDLE_FORMAT_PEM, Data: []byte("x")})
			return err
		}, []string{"trust_domain"}},
		{"set bundle garbage", func() error {
			_, err := e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "partner.org", Format: adminv1.BundleFormat_BUNDLE_FORMAT_PEM, Data: []byte("garbage")})
			return err
		}, []string{"data"}},
		{"set bundle no format", func() error {
			_, err := e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "partner.org", Data: []byte("x")})
			return err
		}, []string{"format"}},
		{"prepare without kind", func() error { _, err := e.client.PrepareCA(ctx, &adminv1.PrepareCARequest{}); return err }, []string{"kind"}},
		{"taint without key id", func() error {
			_, err := e.client.TaintCA(ctx, &adminv1.TaintCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509})
			return err
		}, []string{"key_id"}},
		{"audit negative limit", func() error { _, err := e.client.ListAudit(ctx, &adminv1.ListAuditRequest{Limit: -1}); return err }, []string{"limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), codes.InvalidArgument, tt.parts...)
		})
	}
	if calls := e.auth.Calls(); len(calls) != 0 {
		t.Fatalf("authority called on invalid requests: %v", calls)
	}
}

func TestJoinToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		ttl  *durationpb.Duration
		want time.Duration
	}{
		{"default ttl", nil, DefaultTokenTTL},
		{"given ttl", durationpb.New(time.Hour), time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.client.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Ttl: tt.ttl})
			if err != nil {
				t.Fatalf("CreateJoinToken: %v", err)
			}
			raw, err := hex.DecodeString(resp.GetToken())
			if err != nil || len(raw) != 32 {
				t.Fatalf("token %q is not 32 bytes of hex", resp.GetToken())
			}
			if got := resp.GetExpiresAt().AsTime(); !got.Equal(testNow.Add(tt.want)) {
				t.Fatalf("expires at %v, want %v", got, testNow.Add(tt.want))
			}
			// The token is really stored: an agent can consume it once.
			if _, err := e.store.ConsumeJoinToken(ctx, resp.GetToken(), testNow); err != nil {
				t.Fatalf("consume token: %v", err)
			}
		})
	}
}

func TestJoinTokenWithSPIFFEID(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const alias = "spiffe://example.org/node/db-1"
	for range 2 { // the second token reuses the alias entry
		resp, err := e.client.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{SpiffeId: alias})
		if err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
		tok, err := e.store.ConsumeJoinToken(ctx, resp.GetToken(), testNow)
		if err != nil || tok.SPIFFEID != alias {
			t.Fatalf("stored token %+v, %v: want spiffe id %s", tok, err, alias)
		}
	}
	es, err := e.store.ListEntries(ctx, store.EntryFilter{SPIFFEID: alias})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].ParentID != "spiffe://example.org/sigil/ca" ||
		len(es[0].Selectors) != 1 || es[0].Selectors[0].String() != "join_token:spiffe_id:"+alias {
		t.Fatalf("node alias entries %+v, want one parented to the CA with selector join_token:spiffe_id:%s", es, alias)
	}
	for _, tt := range []struct{ name, id, msg string }{
		{"reserved", "spiffe://example.org/sigil/agent/x", "reserved"},
		{"other trust domain", "spiffe://other.org/node", "spiffe_id"},
		{"not an id", "db-1", "spiffe_id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{SpiffeId: tt.id})
			wantCode(t, err, codes.InvalidArgument, tt.msg)
		})
	}
}

func TestAgents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	other := "spiffe://example.org/sigil/agent/join_token/def"
	for _, id := range []string{agentID, other} {
		if _, err := e.store.CreateAgent(ctx, "ca", store.Agent{
			ID: id, AttestationType: "join_token", Serial: "0a0b", ExpiresAt: testNow.Add(time.Hour),
			Selectors: []selector.Selector{{Type: "join_token", Value: "abc"}},
		}); err != nil {
			t.Fatalf("seed agent: %v", err)
		}
	}
	l, err := e.client.ListAgents(ctx, &adminv1.ListAgentsRequest{})
	if err != nil || len(l.GetAgents()) != 2 {
		t.Fatalf("ListAgents = %v, %v; want 2 agents", l, err)
	}
	b, err := e.client.BanAgent(ctx, &adminv1.BanAgentRequest{Id: agentID})
	if err != nil {
		t.Fatalf("BanAgent: %v", err)
	}
	if !b.GetAgent().GetBanned() || b.GetAgent().GetSerial() != "" {
		t.Fatalf("banned agent = %v", b.GetAgent())
	}
	stored, err := e.store.GetAgent(ctx, agentID)
	if err != nil || !stored.Banned || stored.Serial != "" {
		t.Fatalf("stored agent after ban = %+v, %v", stored, err)
	}
	if _, err := e.client.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: other}); err != nil {
		t.Fatalf("EvictAgent: %v", err)
	}
	if _, err := e.store.GetAgent(ctx, other); err == nil {
		t.Fatal("evicted agent still stored")
	}
	_, err = e.client.EvictAgent(ctx, &adminv1.EvictAgentRequest{Id: other})
	wantCode(t, err, codes.NotFound, other)
	_, err = e.client.BanAgent(ctx, &adminv1.BanAgentRequest{Id: other})
	wantCode(t, err, codes.NotFound, other)
}

func TestBundles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	_, err := e.client.GetBundle(ctx, &adminv1.GetBundleRequest{})
	wantCode(t, err, codes.NotFound, "example.org")

	own := testca.New(t, td)
	if err := e.store.SetBundle(ctx, "ca", store.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{own.Roots()[0].Raw}, Sequence: 7, RefreshHint: time.Minute}); err != nil {
		t.Fatal(err)
	}
	got, err := e.client.GetBundle(ctx, &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle own: %v", err)
	}
	if got.GetBundle().GetTrustDomain() != "example.org" || got.GetBundle().GetSequence() != 7 || len(got.GetBundle().GetX509Authorities()) != 1 {
		t.Fatalf("own bundle = %v", got.GetBundle())
	}

	partnerTD := spiffeid.RequireTrustDomainFromString("partner.org")
	partner := testca.New(t, partnerTD)
	set, err := e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "partner.org", Format: adminv1.BundleFormat_BUNDLE_FORMAT_PEM, Data: rootsPEM(partner)})
	if err != nil {
		t.Fatalf("SetBundle pem: %v", err)
	}
	if set.GetBundle().GetSequence() != 1 {
		t.Fatalf("first pem bundle sequence = %d, want 1", set.GetBundle().GetSequence())
	}

	// A SPIFFE bundle carries its own sequence, refresh hint and JWT keys.
	sb := spiffebundle.FromX509Authorities(partnerTD, partner.Roots())
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.AddJWTAuthority("kid-1", jwtKey.Public()); err != nil {
		t.Fatal(err)
	}
	sb.SetSequenceNumber(42)
	sb.SetRefreshHint(5 * time.Minute)
	doc, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "spiffe://partner.org", Format: adminv1.BundleFormat_BUNDLE_FORMAT_SPIFFE, Data: doc}); err != nil {
		t.Fatalf("SetBundle spiffe: %v", err)
	}
	pb, err := e.client.GetBundle(ctx, &adminv1.GetBundleRequest{TrustDomain: "partner.org"})
	if err != nil {
		t.Fatalf("GetBundle partner: %v", err)
	}
	b := pb.GetBundle()
	if b.GetSequence() != 42 || b.GetRefreshHint().AsDuration() != 5*time.Minute || len(b.GetJwtAuthorities()) != 1 ||
		b.GetJwtAuthorities()[0].GetKeyId() != "kid-1" || len(b.GetX509Authorities()) != 1 {
		t.Fatalf("partner bundle = %v", b)
	}

	l, err := e.client.ListBundles(ctx, &adminv1.ListBundlesRequest{})
	if err != nil || len(l.GetBundles()) != 2 {
		t.Fatalf("ListBundles = %v, %v; want 2", l, err)
	}

	// A leaf is not an authority.
	leaf := partner.Issue(t, "spiffe://partner.org/x")
	_, err = e.client.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: "partner.org", Format: adminv1.BundleFormat_BUNDLE_FORMAT_PEM,
		Data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificates[0].Raw})})
	wantCode(t, err, codes.InvalidArgument, "data", "not a CA")

	if _, err := e.client.DeleteBundle(ctx, &adminv1.DeleteBundleRequest{TrustDomain: "partner.org"}); err != nil {
		t.Fatalf("DeleteBundle: %v", err)
	}
	_, err = e.client.GetBundle(ctx, &adminv1.GetBundleRequest{TrustDomain: "partner.org"})
	wantCode(t, err, codes.NotFound, "partner.org")
}

func TestCAOps(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	st, err := e.client.CAStatus(ctx, &adminv1.CAStatusRequest{})
	if err != nil || st.GetTrustDomain() != "example.org" || len(st.GetKeys()) != 2 || st.GetKeys()[1].GetKind() != adminv1.KeyKind_KEY_KIND_JWT {
		t.Fatalf("CAStatus = %v, %v", st, err)
	}
	p, err := e.client.PrepareCA(ctx, &adminv1.PrepareCARequest{Kind: adminv1.KeyKind_KEY_KIND_JWT})
	if err != nil || p.GetKey().GetState() != "prepared" {
		t.Fatalf("PrepareCA = %v, %v", p, err)
	}
	if _, err := e.client.ActivateCA(ctx, &adminv1.ActivateCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509}); err != nil {
		t.Fatalf("ActivateCA: %v", err)
	}
	if _, err := e.client.TaintCA(ctx, &adminv1.TaintCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509, KeyId: "aaaa"}); err != nil {
		t.Fatalf("TaintCA: %v", err)
	}
	if _, err := e.client.RevokeCA(ctx, &adminv1.RevokeCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509, KeyId: "aaaa"}); err != nil {
		t.Fatalf("RevokeCA: %v", err)
	}
	want := []string{"status", "prepare jwt", "activate x509", "taint x509 aaaa", "revoke x509 aaaa"}
	if got := e.auth.Calls(); !slices.Equal(got, want) {
		t.Fatalf("authority calls %v, want %v", got, want)
	}
	evs, err := e.client.ListAudit(ctx, &adminv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range evs.GetEvents() {
		actions = append(actions, ev.GetAction()+" "+ev.GetTarget()+" "+ev.GetActor())
	}
	wantActions := []string{"ca.prepare next local-admin", "ca.activate next local-admin", "ca.taint aaaa local-admin", "ca.revoke aaaa local-admin"}
	if !slices.Equal(actions, wantActions) {
		t.Fatalf("audit %v, want %v", actions, wantActions)
	}
	// Paging.
	page, err := e.client.ListAudit(ctx, &adminv1.ListAuditRequest{AfterId: evs.GetEvents()[1].GetId(), Limit: 1})
	if err != nil || len(page.GetEvents()) != 1 || page.GetEvents()[0].GetAction() != "ca.taint" {
		t.Fatalf("audit page = %v, %v", page, err)
	}
}

// An unexpected error reaches the client as Internal without its details.
func TestInternalErrorsHideDetails(t *testing.T) {
	e := newEnv(t)
	e.auth.err = errBoom
	_, err := e.client.PrepareCA(context.Background(), &adminv1.PrepareCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509})
	wantCode(t, err, codes.Internal)
	if strings.Contains(err.Error(), "/var/lib") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("internal detail leaked: %v", err)
	}
}

// The CA's operator errors say what to do; the wrapped detail stays out.
func TestCAErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		err   error
		call  func() error
		code  codes.Code
		parts []string
	}{
		{"unknown key", fmt.Errorf("taint x509 key zzz in /etc/secret: %w", ca.ErrKeyNotFound), func() error {
			_, err := e.client.TaintCA(ctx, &adminv1.TaintCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509, KeyId: "zzz"})
			return err
		}, codes.NotFound, []string{`x509 key "zzz" not found`}},
		{"nothing prepared", fmt.Errorf("activate: %w", ca.ErrNoPrepared), func() error {
			_, err := e.client.ActivateCA(ctx, &adminv1.ActivateCARequest{Kind: adminv1.KeyKind_KEY_KIND_JWT})
			return err
		}, codes.FailedPrecondition, []string{"run prepare first"}},
		{"taint active", ca.ErrKeyActive, func() error {
			_, err := e.client.TaintCA(ctx, &adminv1.TaintCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509, KeyId: "aaaa"})
			return err
		}, codes.FailedPrecondition, []string{"the key is active"}},
		{"revoke untainted", fmt.Errorf("revoke /etc/secret: %w", ca.ErrNotTainted), func() error {
			_, err := e.client.RevokeCA(ctx, &adminv1.RevokeCARequest{Kind: adminv1.KeyKind_KEY_KIND_X509, KeyId: "aaaa"})
			return err
		}, codes.FailedPrecondition, []string{"taint it first"}},
		{"store lookup", store.ErrNotFound, func() error {
			_, err := e.client.RevokeCA(ctx, &adminv1.RevokeCARequest{Kind: adminv1.KeyKind_KEY_KIND_JWT, KeyId: "k"})
			return err
		}, codes.NotFound, []string{`jwt key "k"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.auth.err = tt.err
			err := tt.call()
			wantCode(t, err, tt.code, tt.parts...)
			if strings.Contains(err.Error(), "/etc/secret") {
				t.Fatalf("wrapped detail leaked: %v", err)
			}
		})
	}
	// Failed operations leave no audit record.
	evs, err := e.store.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(evs) != 0 {
		t.Fatalf("audit after failed operations = %v, %v; want none", evs, err)
	}
}

// createEntry creates en over the local socket and returns it with its ID.
func (e *env) createEntry(t *testing.T, en *typesv1.Entry) *typesv1.Entry {
	t.Helper()
	out, err := e.client.CreateEntries(context.Background(), &adminv1.CreateEntriesRequest{Entries: []*typesv1.Entry{en}})
	if err != nil {
		t.Fatalf("create entry %s: %v", en.GetSpiffeId(), err)
	}
	return out.GetEntries()[0]
}

func TestAuthMTLS(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const adminID = "spiffe://example.org/ops/alice"
	const userID = "spiffe://example.org/ops/bob"
	adminEntry := e.createEntry(t, &typesv1.Entry{SpiffeId: adminID, ParentId: agentID, Selectors: []string{"unix:uid:1"}, Admin: true})
	userEntry := e.createEntry(t, &typesv1.Entry{SpiffeId: userID, ParentId: agentID, Selectors: []string{"unix:uid:2"}})
	ours := newIssuer(t, td, e.store)
	foreign := newIssuer(t, td, nil) // same trust domain name, another root
	// A federated trust domain whose roots the TLS layer accepts: its SVIDs
	// pass the handshake and must be refused by the admin check.
	federated := testca.New(t, spiffeid.RequireTrustDomainFromString("evil.org"))
	addr := serveTLS(t, e.srv, ours, federated.Roots()...)

	adminCert := ours.issue(t, adminID, adminEntry.GetId())
	userCert := ours.issue(t, userID, userEntry.GetId())
	unregistered := ours.issue(t, "spiffe://example.org/ops/eve", "no-such-entry")
	otherTD := federated.Issue(t, "spiffe://evil.org/ops/alice")
	// A foreign CA can write any entry ID into its certificates: TLS must
	// refuse them before the entry is ever looked up.
	forged := foreign.issue(t, adminID, adminEntry.GetId())

	t.Run("admin svid", func(t *testing.T) {
		c := dialTLS(t, addr, ours, adminCert)
		if _, err := c.ListEntries(ctx, &adminv1.ListEntriesRequest{}); err != nil {
			t.Fatalf("admin refused: %v", err)
		}
		if _, err := c.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{}); err != nil {
			t.Fatalf("admin refused: %v", err)
		}
		evs, err := e.store.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if last := evs[len(evs)-1]; last.Actor != adminID || last.Action != "token.create" {
			t.Fatalf("last audit event %+v, want token.create by %s", last, adminID)
		}
	})
	for _, tt := range []struct {
		name string
		c    func() adminv1.AdminClient
		code codes.Code
	}{
		{name: "non-admin svid", c: func() adminv1.AdminClient { return dialTLS(t, addr, ours, userCert) }, code: codes.PermissionDenied},
		{name: "svid without entry", c: func() adminv1.AdminClient { return dialTLS(t, addr, ours, unregistered) }, code: codes.PermissionDenied},
		{name: "foreign trust domain svid", c: func() adminv1.AdminClient { return dialTLS(t, addr, ours, otherTD) }, code: codes.PermissionDenied},
		// The TLS handshake itself fails: the server does not trust the issuer.
		{name: "entry forged by a foreign ca", c: func() adminv1.AdminClient { return dialTLS(t, addr, ours, forged) }, code: codes.Unavailable},
		{name: "no client cert", c: func() adminv1.AdminClient { return dialTLS(t, addr, ours, nil) }, code: codes.Unavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c().ListEntries(ctx, &adminv1.ListEntriesRequest{})
			wantCode(t, err, tt.code)
		})
	}
}

// Admin rights belong to the entry an SVID was issued for, not to its
// SPIFFE ID: entry B shares admin entry A's SPIFFE ID under another agent,
// and B's SVID must not reach the admin API.
func TestAdminRightsFollowTheEntry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const sharedID = "spiffe://example.org/ops/deploy"
	const agent2 = "spiffe://example.org/sigil/agent/join_token/other"
	a := e.createEntry(t, &typesv1.Entry{SpiffeId: sharedID, ParentId: agentID, Selectors: []string{"unix:uid:1"}, Admin: true})
	b := e.createEntry(t, &typesv1.Entry{SpiffeId: sharedID, ParentId: agent2, Selectors: []string{"unix:uid:1000"}})
	ours := newIssuer(t, td, e.store)
	addr := serveTLS(t, e.srv, ours)
	call := func(svid *x509svid.SVID) error {
		_, err := dialTLS(t, addr, ours, svid).ListEntries(ctx, &adminv1.ListEntriesRequest{})
		return err
	}

	t.Run("entry A is admin", func(t *testing.T) {
		if err := call(ours.issue(t, sharedID, a.GetId())); err != nil {
			t.Fatalf("A refused: %v", err)
		}
	})
	t.Run("entry B shares the ID but is not admin", func(t *testing.T) {
		wantCode(t, call(ours.issue(t, sharedID, b.GetId())), codes.PermissionDenied, "not an admin entry")
	})
	t.Run("an agent or CA svid names no entry", func(t *testing.T) {
		// Even an admin entry whose SPIFFE ID is an agent's does not make
		// the agent's own SVID an admin one.
		e.createEntry(t, &typesv1.Entry{SpiffeId: "spiffe://example.org/ops/agentlike", ParentId: agentID, Selectors: []string{"unix:uid:3"}, Admin: true})
		wantCode(t, call(ours.issue(t, "spiffe://example.org/ops/agentlike", "")), codes.PermissionDenied, "names no registration entry")
		caSVID, err := ours.ca.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, call(caSVID), codes.PermissionDenied, "names no registration entry")
	})
	t.Run("an entry ID for another SPIFFE ID", func(t *testing.T) {
		wantCode(t, call(ours.issue(t, "spiffe://example.org/ops/mallory", a.GetId())), codes.PermissionDenied, "is for another SPIFFE ID")
	})
	t.Run("A after its admin flag is cleared", func(t *testing.T) {
		svid := ours.issue(t, sharedID, a.GetId())
		if err := call(svid); err != nil {
			t.Fatalf("A refused before the change: %v", err)
		}
		cleared := proto.Clone(a).(*typesv1.Entry)
		cleared.Admin = false
		if _, err := e.client.UpdateEntry(ctx, &adminv1.UpdateEntryRequest{Entry: cleared}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, call(svid), codes.PermissionDenied, "not an admin entry")
	})
	t.Run("A after it is deleted", func(t *testing.T) {
		admin2 := e.createEntry(t, &typesv1.Entry{SpiffeId: sharedID, ParentId: agentID, Selectors: []string{"unix:uid:4"}, Admin: true})
		svid := ours.issue(t, sharedID, admin2.GetId())
		if err := call(svid); err != nil {
			t.Fatalf("refused before the delete: %v", err)
		}
		if _, err := e.client.DeleteEntry(ctx, &adminv1.DeleteEntryRequest{Id: admin2.GetId()}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, call(svid), codes.PermissionDenied, "no longer exists")
	})
}

// Plain TCP without TLS is neither the local socket nor an admin SVID.
func TestAuthPlainTCPRefused(t *testing.T) {
	e := newEnv(t)
	lis, err := netListenLocal()
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(e.srv.ServerOptions()...)
	e.srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = adminv1.NewAdminClient(conn).ListEntries(context.Background(), &adminv1.ListEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied)
}

// Without the interceptor every call fails closed.
func TestNoInterceptorFailsClosed(t *testing.T) {
	e := newEnv(t)
	_, err := e.srv.ListEntries(context.Background(), &adminv1.ListEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied)
}

func TestNewChecksConfig(t *testing.T) {
	e := newEnv(t)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no trust domain", Config{Store: e.store, Authority: e.auth}, "trust domain"},
		{"no store", Config{TrustDomain: td, Authority: e.auth}, "store"},
		{"no authority", Config{TrustDomain: td, Store: e.store}, "authority"},
		{"negative token ttl", Config{TrustDomain: td, Store: e.store, Authority: e.auth, DefaultTokenTTL: -time.Second, Logger: discard}, "token ttl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// RevokeSVID passes a normalized serial (or a SPIFFE ID alone) and the caller to the CA, refuses
// bad input before reaching it, and maps the store's limit to
// ResourceExhausted.
func TestRevokeSVID(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.client.RevokeSVID(ctx, &adminv1.RevokeSVIDRequest{Serial: "serial=AB:CD", SpiffeId: "spiffe://example.org/w"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		req  *adminv1.RevokeSVIDRequest
		code codes.Code
	}{
		{"no serial", &adminv1.RevokeSVIDRequest{}, codes.InvalidArgument},
		{"foreign SPIFFE ID alone", &adminv1.RevokeSVIDRequest{SpiffeId: "spiffe://other.org/w"}, codes.InvalidArgument},
		{"bad SPIFFE ID alone", &adminv1.RevokeSVIDRequest{SpiffeId: "example.org/w"}, codes.InvalidArgument},
		{"huge serial", &adminv1.RevokeSVIDRequest{Serial: strings.Repeat("a", 65)}, codes.InvalidArgument},
		{"foreign SPIFFE ID", &adminv1.RevokeSVIDRequest{Serial: "ab", SpiffeId: "spiffe://other.org/w"}, codes.InvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.RevokeSVID(ctx, tt.req)
			wantCode(t, err, tt.code)
		})
	}
	if _, err := e.client.RevokeSVID(ctx, &adminv1.RevokeSVIDRequest{SpiffeId: "spiffe://example.org/w"}); err != nil {
		t.Fatalf("revoke by SPIFFE ID alone: %v", err)
	}
	if got, want := e.auth.Calls(), []string{"revoke svid ABCD spiffe://example.org/w by local-admin", "revoke spiffe id spiffe://example.org/w by local-admin"}; !slices.Equal(got, want) {
		t.Fatalf("authority calls %v, want %v", got, want)
	}
	e.auth.err = fmt.Errorf("revoke: %w", store.ErrLimit)
	_, err := e.client.RevokeSVID(ctx, &adminv1.RevokeSVIDRequest{Serial: "ef"})
	wantCode(t, err, codes.ResourceExhausted, "revoke the issuing key")
}
