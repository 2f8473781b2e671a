package cache

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestRotateAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(time.Hour)
	tests := []struct {
		name string
		r    float64
		want time.Duration
	}{
		{name: "no jitter", r: 0.5, want: 30 * time.Minute},
		{name: "earliest", r: 0, want: 27 * time.Minute},
		{name: "latest", r: 0.9999999999, want: 33 * time.Minute},
		{name: "below range clamps", r: -3, want: 27 * time.Minute},
		{name: "above range clamps", r: 7, want: 33 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RotateAt(nb, na, tt.r).Sub(nb)
			if d := got - tt.want; d > time.Millisecond || d < -time.Millisecond {
				t.Errorf("RotateAt = +%v, want +%v", got, tt.want)
			}
			if ShouldRotate(nb.Add(tt.want-time.Second), nb, na, tt.r) {
				t.Error("due a second early")
			}
			if !ShouldRotate(nb.Add(tt.want+time.Second), nb, na, tt.r) {
				t.Error("not due a second late")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt  int
		r        float64
		min, max time.Duration
	}{
		{0, 0, 250 * time.Millisecond, 500 * time.Millisecond},
		{0, 0.999, 495 * time.Millisecond, 500 * time.Millisecond},
		{3, 0, 2 * time.Second, 2 * time.Second},
		{10, 0, 15 * time.Second, 15 * time.Second},
		{10, 0.999, 29 * time.Second, 30 * time.Second},
		{1000, 0.5, 22 * time.Second, 23 * time.Second},
	}
	for _, tt := range tests {
		got := Backoff(tt.attempt, 500*time.Millisecond, 30*time.Second, tt.r)
		if got < tt.min || got > tt.max {
			t.Errorf("Backoff(%d, r=%v) = %v, want in [%v, %v]", tt.attempt, tt.r, got, tt.min, tt.max)
		}
	}
}

// signer is a node API client that signs with an in-memory test CA, so the
// cache's batching, checks and rotation can be driven by a fake clock.
type signer struct {
	t     testing.TB
	ca    *testca.CA
	ttl   time.Duration
	keyID string

	mu      sync.Mutex
	calls   int
	sizes   []int
	fail    error
	refuse  map[string]bool // entry IDs
	jwtMint int
	now     func() time.Time
	skew    time.Duration // added to the validity of what it signs
}

type pubOnly struct{ pub crypto.PublicKey }

func (p pubOnly) Public() crypto.PublicKey { return p.pub }
func (p pubOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("public key only")
}

func (s *signer) Sync(context.Context, *nodev1.SyncRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[nodev1.SyncResponse], error) {
	return nil, errors.New("no sync in unit tests")
}

func (s *signer) SignX509SVIDs(_ context.Context, in *nodev1.SignX509SVIDsRequest, _ ...grpc.CallOption) (*nodev1.SignX509SVIDsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.sizes = append(s.sizes, len(in.GetCsrs()))
	if s.fail != nil {
		return nil, s.fail
	}
	out := &nodev1.SignX509SVIDsResponse{}
	for _, c := range in.GetCsrs() {
		if s.refuse[c.GetEntryId()] {
			out.Results = append(out.Results, &nodev1.SignResult{EntryId: c.GetEntryId(), Error: "not authorized"})
			continue
		}
		req, err := x509.ParseCertificateRequest(c.GetCsr())
		if err != nil {
			s.t.Errorf("bad csr: %v", err)
			continue
		}
		now := s.now().Add(s.skew)
		svid := s.ca.Issue(s.t, req.URIs[0].String(), testca.WithKey(pubOnly{req.PublicKey}), testca.WithValidity(now, now.Add(s.ttl)), testca.WithDNSNames(req.DNSNames...))
		res := &nodev1.SignResult{EntryId: c.GetEntryId(), CaKeyId: s.keyID}
		for _, c := range svid.Certificates {
			res.CertChain = append(res.CertChain, c.Raw)
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

func (s *signer) MintJWTSVID(_ context.Context, in *nodev1.MintJWTSVIDRequest, _ ...grpc.CallOption) (*nodev1.MintJWTSVIDResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwtMint++
	return &nodev1.MintJWTSVIDResponse{Token: in.GetEntryId() + "-" + time.Duration(s.jwtMint).String(), ExpiresAt: timestamppb.New(s.now().Add(5 * time.Minute))}, nil
}

func newTestCache(t testing.TB, batch int) (*Cache, *signer, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	s := &signer{t: t, ca: testca.New(t, td), ttl: time.Hour, keyID: "k1", now: clk.Now, refuse: map[string]bool{}}
	c, err := New(Config{TrustDomain: td, Client: s, BatchSize: batch, Clock: clk, Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	return c, s, clk
}

func ent(id, spiffeID string, sels ...string) *typesv1.Entry {
	return &typesv1.Entry{Id: id, SpiffeId: spiffeID, ParentId: "spiffe://example.org/sigil/agent/x", Selectors: sels}
}

func bundlePB(t *testing.T, tdName string, ca *testca.CA, seq uint64) *typesv1.Bundle {
	t.Helper()
	b := &typesv1.Bundle{TrustDomain: tdName, Sequence: seq}
	for _, r := range ca.Roots() {
		b.X509Authorities = append(b.X509Authorities, r.Raw)
	}
	return b
}

func mustApply(t *testing.T, c *Cache, r *nodev1.SyncResponse) {
	t.Helper()
	if err := c.Apply(r); err != nil {
		t.Fatal(err)
	}
	checkCount(t, c)
}

// checkCount checks the SVID counter against the entries.
func checkCount(t *testing.T, c *Cache) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.entries {
		if e.svid != nil {
			n++
		}
	}
	if n != c.nsvids {
		t.Fatalf("svid counter %d, entries hold %d", c.nsvids, n)
	}
}

func mustMint(t *testing.T, c *Cache) time.Time {
	t.Helper()
	next, err := c.MintDue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkCount(t, c)
	return next
}

// latest takes the Update waiting on a subscription, failing if none is.
func latest(t *testing.T, sub workload.Subscription) workload.Update {
	t.Helper()
	select {
	case u := <-sub.Updates():
		return u
	default:
		t.Fatal("no update waiting")
		return workload.Update{}
	}
}

func noUpdate(t *testing.T, sub workload.Subscription) {
	t.Helper()
	select {
	case u := <-sub.Updates():
		t.Fatalf("unexpected update with %d identities", len(u.Identities))
	default:
	}
}

func ids(u workload.Update) []string {
	var out []string
	for _, i := range u.Identities {
		out = append(out, i.EntryID+"="+i.SVID.ID.String())
	}
	return out
}

func sels(ss ...string) selector.Set {
	parsed, err := selector.ParseAll(ss)
	if err != nil {
		panic(err)
	}
	return selector.NewSet(parsed...)
}

func TestSubscribeFanOut(t *testing.T) {
	c, s, _ := newTestCache(t, 100)
	fedCA := testca.New(t, spiffeid.RequireTrustDomainFromString("partner.org"))
	own := bundlePB(t, "example.org", s.ca, 1)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 3, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/web", "unix:uid:1000"),
		ent("b", "spiffe://example.org/web-admin", "unix:uid:1000", "unix:gid:50"),
		ent("c", "spiffe://example.org/db", "unix:uid:2000"),
	}, Bundles: []*typesv1.Bundle{own, bundlePB(t, "partner.org", fedCA, 1)}})

	web := c.Subscribe(sels("unix:uid:1000", "unix:gid:1"))
	defer web.Close()
	db := c.Subscribe(sels("unix:uid:2000"))
	defer db.Close()
	nobody := c.Subscribe(sels("unix:uid:3000"))
	defer nobody.Close()
	if u := latest(t, web); len(u.Identities) != 0 || u.Bundle == nil {
		t.Fatalf("before minting: %v, bundle %v", ids(u), u.Bundle)
	}
	latest(t, db)
	latest(t, nobody)

	mustMint(t, c)
	if got := ids(latest(t, web)); len(got) != 1 || got[0] != "a=spiffe://example.org/web" {
		t.Errorf("web sees %v", got)
	}
	if got := ids(latest(t, db)); len(got) != 1 || got[0] != "c=spiffe://example.org/db" {
		t.Errorf("db sees %v", got)
	}
	noUpdate(t, nobody)
	if n, m := c.Stats(); n != 3 || m != 3 {
		t.Errorf("stats = %d entries, %d svids", n, m)
	}

	t.Run("federates_with", func(t *testing.T) {
		e := ent("c", "spiffe://example.org/db", "unix:uid:2000")
		e.FederatesWith = []string{"partner.org"}
		mustApply(t, c, &nodev1.SyncResponse{Revision: 4, Entries: []*typesv1.Entry{e}})
		u := latest(t, db)
		if len(u.FederatedBundles) != 1 || u.FederatedBundles[fedCA.TrustDomain()] == nil || len(u.Identities) != 1 {
			t.Errorf("federated = %v, identities %v", u.FederatedBundles, ids(u))
		}
		noUpdate(t, web)
	})
	t.Run("selector change moves an identity", func(t *testing.T) {
		mustApply(t, c, &nodev1.SyncResponse{Revision: 5, Entries: []*typesv1.Entry{ent("b", "spiffe://example.org/web-admin", "unix:uid:1000", "unix:gid:1")}})
		if got := ids(latest(t, web)); len(got) != 2 {
			t.Errorf("web sees %v", got)
		}
		noUpdate(t, db)
	})
	t.Run("spiffe id change drops the old SVID until re-minted", func(t *testing.T) {
		mustApply(t, c, &nodev1.SyncResponse{Revision: 6, Entries: []*typesv1.Entry{ent("c", "spiffe://example.org/db2", "unix:uid:2000")}})
		if got := ids(latest(t, db)); len(got) != 0 {
			t.Errorf("db sees %v before re-minting", got)
		}
		mustMint(t, c)
		if got := ids(latest(t, db)); len(got) != 1 || got[0] != "c=spiffe://example.org/db2" {
			t.Errorf("db sees %v", got)
		}
	})
	t.Run("deletion", func(t *testing.T) {
		mustApply(t, c, &nodev1.SyncResponse{Revision: 6, DeletedEntryIds: []string{"a"}})
		if got := ids(latest(t, web)); len(got) != 1 || got[0] != "b=spiffe://example.org/web-admin" {
			t.Errorf("web sees %v", got)
		}
	})
	t.Run("bundle change reaches everyone", func(t *testing.T) {
		mustApply(t, c, &nodev1.SyncResponse{Revision: 7, Bundles: []*typesv1.Bundle{bundlePB(t, "example.org", s.ca, 2)}})
		for _, sub := range []workload.Subscription{web, db, nobody} {
			if seq, _ := latest(t, sub).Bundle.SequenceNumber(); seq != 2 {
				t.Errorf("sequence %d", seq)
			}
		}
	})
	t.Run("full replacement drops missing entries", func(t *testing.T) {
		mustApply(t, c, &nodev1.SyncResponse{Revision: 9, Full: true, Entries: []*typesv1.Entry{ent("c", "spiffe://example.org/db", "unix:uid:2000")}})
		if got := ids(latest(t, web)); len(got) != 0 {
			t.Errorf("web sees %v", got)
		}
		if c.Revision() != 9 {
			t.Errorf("revision %d", c.Revision())
		}
	})
	t.Run("closed subscription gets nothing", func(t *testing.T) {
		web.Close()
		mustApply(t, c, &nodev1.SyncResponse{Revision: 10, Entries: []*typesv1.Entry{ent("z", "spiffe://example.org/z", "unix:uid:1000")}})
		mustMint(t, c)
		noUpdate(t, web)
	})
}

func TestLatestWins(t *testing.T) {
	c, _, _ := newTestCache(t, 100)
	sub := c.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	for i := range 5 {
		mustApply(t, c, &nodev1.SyncResponse{Revision: int64(i + 1), Entries: []*typesv1.Entry{ent("e", "spiffe://example.org/e", "unix:uid:1")}})
		mustMint(t, c)
		mustApply(t, c, &nodev1.SyncResponse{Revision: int64(i + 1), DeletedEntryIds: []string{"e"}})
	}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 9, Entries: []*typesv1.Entry{ent("last", "spiffe://example.org/last", "unix:uid:1")}})
	mustMint(t, c)
	if got := ids(latest(t, sub)); len(got) != 1 || got[0] != "last=spiffe://example.org/last" {
		t.Errorf("got %v, want only the latest state", got)
	}
	noUpdate(t, sub)
}

func TestMintBatchesAndRotation(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	var entries []*typesv1.Entry
	for i := range 250 {
		entries = append(entries, ent(string(rune('A'+i/26))+string(rune('a'+i%26))+"-"+time.Duration(i).String(), "spiffe://example.org/w/"+time.Duration(i).String(), "unix:uid:1"))
	}
	entries[0].DnsNames = []string{"w0.example.org"}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: entries})
	next := mustMint(t, c)
	if s.calls != 3 || s.sizes[0] != 100 || s.sizes[1] != 100 || s.sizes[2] != 50 {
		t.Fatalf("calls %d sizes %v, want 3 calls of 100, 100, 50", s.calls, s.sizes)
	}
	if want := clk.Now().Add(30 * time.Minute); !next.Equal(want) {
		t.Errorf("next due %v, want %v", next, want)
	}
	sub := c.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	u := latest(t, sub)
	if len(u.Identities) != 250 {
		t.Fatalf("%d identities", len(u.Identities))
	}
	first := u.Identities[0].SVID
	if got := first.Certificates[0].DNSNames; len(got) != 1 || got[0] != "w0.example.org" {
		t.Errorf("dns names %v", got)
	}

	mustMint(t, c)
	if s.calls != 3 {
		t.Errorf("minted again before rotation was due: %d calls", s.calls)
	}
	clk.Advance(31 * time.Minute)
	mustMint(t, c)
	if s.calls != 6 {
		t.Errorf("rotation: %d calls, want 6", s.calls)
	}
	u = latest(t, sub)
	if u.Identities[0].SVID == first || u.Identities[0].SVID.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Error("not rotated")
	}

	t.Run("tainted key re-issues at once", func(t *testing.T) {
		s.keyID = "k2"
		mustApply(t, c, &nodev1.SyncResponse{Revision: 2, TaintedX509KeyIds: []string{"k1"}})
		before := s.calls
		mustMint(t, c)
		if s.calls-before != 3 {
			t.Errorf("%d calls after taint, want 3", s.calls-before)
		}
		mustMint(t, c)
		if s.calls-before != 3 {
			t.Errorf("re-minted SVIDs of an untainted key")
		}
	})
	t.Run("revoked key stops serving at once", func(t *testing.T) {
		latest(t, sub)
		mustApply(t, c, &nodev1.SyncResponse{Revision: 3, RevokedX509KeyIds: []string{"k2"}})
		if u := latest(t, sub); len(u.Identities) != 0 {
			t.Errorf("%d identities still served", len(u.Identities))
		}
		s.keyID = "k3"
		mustMint(t, c)
		if u := latest(t, sub); len(u.Identities) != 250 {
			t.Errorf("%d identities after re-issue", len(u.Identities))
		}
	})
	t.Run("changed dns names re-issue, keeping the old SVID meanwhile", func(t *testing.T) {
		e := proto.Clone(entries[1]).(*typesv1.Entry)
		e.DnsNames = []string{"new.example.org"}
		e.X509Ttl = durationpb.New(time.Hour)
		mustApply(t, c, &nodev1.SyncResponse{Revision: 4, Entries: []*typesv1.Entry{e}})
		if u := latest(t, sub); len(u.Identities) != 250 {
			t.Errorf("%d identities", len(u.Identities))
		}
		before := s.calls
		mustMint(t, c)
		if s.calls-before != 1 || s.sizes[len(s.sizes)-1] != 1 {
			t.Errorf("calls %d sizes %v", s.calls-before, s.sizes)
		}
	})
	t.Run("CA unreachable keeps SVIDs", func(t *testing.T) {
		s.fail = errors.New("connection refused")
		clk.Advance(40 * time.Minute)
		if _, err := c.MintDue(context.Background()); err == nil {
			t.Fatal("no error")
		}
		if _, n := c.Stats(); n != 250 {
			t.Errorf("%d svids after failure", n)
		}
		s.fail = nil
		mustMint(t, c)
		if u := latest(t, sub); len(u.Identities) != 250 || !u.Identities[5].SVID.Certificates[0].NotBefore.Equal(clk.Now()) {
			t.Errorf("not rotated after recovery")
		}
	})
	t.Run("refused CSR waits its own backoff", func(t *testing.T) {
		mustApply(t, c, &nodev1.SyncResponse{Revision: 5, Entries: []*typesv1.Entry{ent("refused", "spiffe://example.org/refused", "unix:uid:1")}})
		s.refuse["refused"] = true
		before := s.calls
		next := mustMint(t, c)
		mustMint(t, c)
		if s.calls-before != 1 {
			t.Errorf("%d calls, want 1 (retry must wait)", s.calls-before)
		}
		if d := next.Sub(clk.Now()); d <= 0 || d > time.Second {
			t.Errorf("next retry in %v", d)
		}
		clk.Advance(time.Second)
		delete(s.refuse, "refused")
		mustMint(t, c)
		if _, n := c.Stats(); n != 251 {
			t.Errorf("%d svids", n)
		}
	})
}

func TestApplyRejectsBadResponses(t *testing.T) {
	c, s, _ := newTestCache(t, 100)
	tests := []struct {
		name string
		resp *nodev1.SyncResponse
	}{
		{name: "no entry id", resp: &nodev1.SyncResponse{Entries: []*typesv1.Entry{ent("", "spiffe://example.org/a", "unix:uid:1")}}},
		{name: "bad spiffe id", resp: &nodev1.SyncResponse{Entries: []*typesv1.Entry{ent("a", "http://x", "unix:uid:1")}}},
		{name: "foreign trust domain", resp: &nodev1.SyncResponse{Entries: []*typesv1.Entry{ent("a", "spiffe://other.org/a", "unix:uid:1")}}},
		{name: "bad selector", resp: &nodev1.SyncResponse{Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/a", "nocolon")}}},
		{name: "bad federates_with", resp: &nodev1.SyncResponse{Entries: []*typesv1.Entry{{Id: "a", SpiffeId: "spiffe://example.org/a", Selectors: []string{"unix:uid:1"}, FederatesWith: []string{"Bad TD"}}}}},
		{name: "bundles without ours", resp: &nodev1.SyncResponse{Bundles: []*typesv1.Bundle{bundlePB(t, "other.org", s.ca, 1)}}},
		{name: "bad bundle cert", resp: &nodev1.SyncResponse{Bundles: []*typesv1.Bundle{{TrustDomain: "example.org", X509Authorities: [][]byte{{1, 2}}}}}},
		{name: "bad CRL", resp: &nodev1.SyncResponse{X509CrlsChanged: true, X509Crls: [][]byte{{1, 2}}}},
		{name: "too many CRLs", resp: &nodev1.SyncResponse{X509CrlsChanged: true, X509Crls: make([][]byte, MaxCRLs+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.resp.Revision = 5
			if err := c.Apply(tt.resp); err == nil {
				t.Fatal("applied")
			}
			if n, _ := c.Stats(); n != 0 || c.Revision() != 0 {
				t.Errorf("half-applied: %d entries, revision %d", n, c.Revision())
			}
		})
	}
}

func TestFetchJWTSVID(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{
		ent("a", "spiffe://example.org/a", "unix:uid:1"),
		ent("a2", "spiffe://example.org/a", "unix:uid:1", "unix:gid:1"),
		ent("b", "spiffe://example.org/b", "unix:uid:1"),
	}})
	ctx := context.Background()
	ws := sels("unix:uid:1", "unix:gid:1")
	got, err := c.FetchJWTSVID(ctx, ws, spiffeid.ID{}, []string{"x", "y"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID.String() != "spiffe://example.org/a" || got[1].ID.String() != "spiffe://example.org/b" {
		t.Fatalf("got %+v", got)
	}
	again, err := c.FetchJWTSVID(ctx, ws, spiffeid.RequireFromString("spiffe://example.org/b"), []string{"y", "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || again[0].Token != got[1].Token || s.jwtMint != 2 {
		t.Errorf("not reused: %+v, %d mints", again, s.jwtMint)
	}
	clk.Advance(151 * time.Second)
	fresh, err := c.FetchJWTSVID(ctx, ws, spiffeid.RequireFromString("spiffe://example.org/b"), []string{"x", "y"})
	if err != nil {
		t.Fatal(err)
	}
	if fresh[0].Token == got[1].Token || s.jwtMint != 3 {
		t.Errorf("reused past half life")
	}
	if _, err := c.FetchJWTSVID(ctx, sels("unix:uid:9"), spiffeid.ID{}, []string{"x"}); !errors.Is(err, workload.ErrNoIdentity) {
		t.Errorf("no identity: err = %v", err)
	}
	if _, err := c.FetchJWTSVID(ctx, ws, spiffeid.RequireFromString("spiffe://example.org/zzz"), []string{"x"}); !errors.Is(err, workload.ErrNoIdentity) {
		t.Errorf("foreign id: err = %v", err)
	}
	if _, err := c.FetchJWTSVID(ctx, ws, spiffeid.ID{}, nil); err == nil {
		t.Error("no audience accepted")
	}
}

// TestRunWaitsOnTheClock runs the sync and mint loops on the fake clock:
// the mint loop sleeps until the SVID is due and rotates it only when the
// clock gets there, while the sync loop waits out its backoff on the same
// clock (the test signer has no Sync).
func TestRunWaitsOnTheClock(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/web", "unix:uid:1000")}})
	sub := c.Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	latest(t, sub) // nothing minted yet
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	calls := func() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

	var first *x509svid.SVID
	select {
	case u := <-sub.Updates():
		first = u.Identities[0].SVID
	case <-ctx.Done():
		t.Fatal("Run minted nothing")
	}
	if err := clk.WaitTimers(ctx, 3); err != nil {
		t.Fatalf("the mint, sync and expiry loops did not all wait on the clock: %v", err)
	}
	clk.Advance(29 * time.Minute) // rotation is due at 30 minutes
	if err := clk.WaitTimers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	noUpdate(t, sub)
	if n := calls(); n != 1 {
		t.Fatalf("%d signing calls before rotation was due, want 1", n)
	}

	clk.Advance(time.Minute)
	select {
	case u := <-sub.Updates():
		if got := u.Identities[0].SVID; got.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
			t.Fatal("update without a rotated SVID")
		}
	case <-ctx.Done():
		t.Fatal("not rotated when the clock reached the rotation time")
	}
	if n := calls(); n != 2 {
		t.Fatalf("%d signing calls, want 2", n)
	}
}

// CRLs from the sync reach every subscriber; a response that does not say
// they changed leaves them alone.
func TestCRLsReachSubscribers(t *testing.T) {
	c, s, _ := newTestCache(t, 100)
	crl := s.ca.CRL(t, big.NewInt(0xabc))
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/web", "unix:uid:1000")},
		Bundles: []*typesv1.Bundle{bundlePB(t, "example.org", s.ca, 1)}})
	sub := c.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	if u := latest(t, sub); len(u.X509CRLs) != 0 {
		t.Fatalf("CRLs before any were sent: %d", len(u.X509CRLs))
	}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, X509CrlsChanged: true, X509Crls: [][]byte{crl}})
	if u := latest(t, sub); len(u.X509CRLs) != 1 || !bytes.Equal(u.X509CRLs[0], crl) {
		t.Fatalf("CRLs after the sync: %d, want the one sent", len(u.X509CRLs))
	}
	mustApply(t, c, &nodev1.SyncResponse{Revision: 2})
	noUpdate(t, sub)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 3, X509CrlsChanged: true})
	if u := latest(t, sub); len(u.X509CRLs) != 0 {
		t.Fatalf("CRLs after an empty set was sent: %d", len(u.X509CRLs))
	}
}
