package federation_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/federation"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/testca"
)

var (
	ours = spiffeid.RequireTrustDomainFromString("sigil.test")
	peer = spiffeid.RequireTrustDomainFromString("peer.test")
)

// peerEndpoint runs a bundle endpoint of the peer trust domain serving
// its CA's bundle with sequence seq, and returns its URL.
func peerEndpoint(t *testing.T, cfg federation.EndpointConfig, bundle func() *spiffebundle.Bundle) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = lis
	cfg.Bundle = func(context.Context) (*spiffebundle.Bundle, error) { return bundle(), nil }
	ep, err := federation.NewEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ep.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("endpoint: %v", err)
		}
	})
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	return "https://localhost:" + port + "/"
}

func openStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func spiffeBundleOf(ca *testca.CA, seq uint64, hint time.Duration) *spiffebundle.Bundle {
	b := spiffebundle.FromX509Authorities(ca.TrustDomain(), ca.Roots())
	b.SetSequenceNumber(seq)
	b.SetRefreshHint(hint)
	return b
}

func TestRefreshHTTPSSPIFFE(t *testing.T) {
	ctx := context.Background()
	peerCA := testca.New(t, peer)
	endpointID := spiffeid.RequireFromString("spiffe://peer.test/bundle-endpoint")
	seq := uint64(7)
	url := peerEndpoint(t, federation.EndpointConfig{Profile: federation.ProfileSPIFFE, SVID: peerCA.Issue(t, endpointID.String())},
		func() *spiffebundle.Bundle { return spiffeBundleOf(peerCA, seq, 40*time.Second) })

	st := openStore(t)
	reg := prometheus.NewRegistry()
	rel := federation.Relationship{TrustDomain: peer, URL: url, Profile: federation.ProfileSPIFFE, EndpointID: endpointID}
	rels := []federation.Relationship{rel}
	r, err := federation.NewRefresher(federation.RefresherConfig{
		TrustDomain: ours, Store: st, Metrics: reg,
		Relationships: func(context.Context) ([]federation.Relationship, error) { return rels, nil },
	})
	if err != nil {
		t.Fatal(err)
	}

	// No initial bundle: https_spiffe cannot authenticate the endpoint.
	r.RefreshDue(ctx)
	s := r.Statuses()[0]
	if s.ConsecutiveFailures != 1 || !strings.Contains(s.LastError, "initial bundle") {
		t.Fatalf("without an initial bundle: status %+v, want a failure naming the initial bundle", s)
	}

	initial, err := federation.ToStore(spiffeBundleOf(peerCA, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetBundle(ctx, "test", initial); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Fetch(ctx, rel); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	// The status says when to retry (MinRefresh): force it by a fresh refresher.
	r2, _ := federation.NewRefresher(federation.RefresherConfig{TrustDomain: ours, Store: st,
		Relationships: func(context.Context) ([]federation.Relationship, error) { return rels, nil }})
	r2.RefreshDue(ctx)
	s = r2.Statuses()[0]
	if s.LastError != "" || s.Sequence != 7 {
		t.Fatalf("status after refresh: %+v", s)
	}
	// The hint (40s) is within the bounds (30s..1h) and decides the next fetch.
	if got := s.NextRefresh.Sub(s.LastAttempt); got != 40*time.Second {
		t.Errorf("next refresh in %s, want the peer's hint 40s", got)
	}
	got, err := st.GetBundle(ctx, peer.Name())
	if err != nil || got.Sequence != 7 || got.RefreshHint != 40*time.Second {
		t.Fatalf("stored bundle: %+v, %v", got, err)
	}

	// A wrong endpoint ID fails, and the last good bundle stays.
	bad := rel
	bad.EndpointID = spiffeid.RequireFromString("spiffe://peer.test/someone-else")
	rels = []federation.Relationship{bad}
	r.RefreshDue(ctx)
	s = r.Statuses()[0]
	if s.ConsecutiveFailures != 1 || s.LastError == "" {
		t.Fatalf("wrong endpoint ID: status %+v, want a failure", s)
	}
	if got, _ := st.GetBundle(ctx, peer.Name()); got.Sequence != 7 {
		t.Errorf("after a failed fetch the stored bundle has sequence %d, want the last good 7", got.Sequence)
	}
	if n := counterValue(t, reg, "error"); n != 2 {
		t.Errorf("error fetches counted %v, want 2", n)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sigil_federation_bundle_fetches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestRefreshHTTPSWeb(t *testing.T) {
	ctx := context.Background()
	web := testca.New(t, spiffeid.RequireTrustDomainFromString("web.test"))
	svid := web.Issue(t, "spiffe://web.test/endpoint", testca.WithDNSNames("localhost"))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	chain, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	peerCA := testca.New(t, peer)
	url := peerEndpoint(t, federation.EndpointConfig{Profile: federation.ProfileWeb, CertFile: certFile, KeyFile: keyFile},
		func() *spiffebundle.Bundle { return spiffeBundleOf(peerCA, 3, 0) })

	st := openStore(t)
	for _, tc := range []struct {
		name    string
		roots   *x509.CertPool
		wantErr bool
	}{
		{"trusted web root", web.RootPool(), false},
		{"system roots do not know the test root", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel := federation.Relationship{TrustDomain: peer, URL: url, Profile: federation.ProfileWeb, WebRoots: tc.roots}
			r, err := federation.NewRefresher(federation.RefresherConfig{TrustDomain: ours, Store: st,
				Relationships: func(context.Context) ([]federation.Relationship, error) { return []federation.Relationship{rel}, nil }})
			if err != nil {
				t.Fatal(err)
			}
			r.RefreshDue(ctx)
			s := r.Statuses()[0]
			if (s.LastError != "") != tc.wantErr {
				t.Fatalf("status %+v, want error %v", s, tc.wantErr)
			}
		})
	}
	got, err := st.GetBundle(ctx, peer.Name())
	if err != nil || got.Sequence != 3 || len(got.X509Authorities) != 1 {
		t.Fatalf("stored bundle %+v, %v", got, err)
	}
	if _, err := st.GetBundle(ctx, ours.Name()); err == nil {
		t.Errorf("our own bundle appeared")
	} else if !strings.Contains(err.Error(), store.ErrNotFound.Error()) {
		t.Errorf("get own bundle: %v", err)
	}
}

func TestRelationshipCheck(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://peer.test/spire/server")
	for _, tc := range []struct {
		name string
		rel  federation.Relationship
		want string
	}{
		{"ok spiffe", federation.Relationship{TrustDomain: peer, URL: "https://h:1/", Profile: "https_spiffe", EndpointID: id}, ""},
		{"ok web", federation.Relationship{TrustDomain: peer, URL: "https://h/b", Profile: "https_web"}, ""},
		{"own trust domain", federation.Relationship{TrustDomain: ours, URL: "https://h/", Profile: "https_web"}, "our own"},
		{"http", federation.Relationship{TrustDomain: peer, URL: "http://h/", Profile: "https_web"}, "want https"},
		{"no endpoint id", federation.Relationship{TrustDomain: peer, URL: "https://h/", Profile: "https_spiffe"}, "endpoint SPIFFE ID"},
		{"id with web", federation.Relationship{TrustDomain: peer, URL: "https://h/", Profile: "https_web", EndpointID: id}, "only for https_spiffe"},
		{"bad profile", federation.Relationship{TrustDomain: peer, URL: "https://h/", Profile: "ftp"}, "profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rel.Check(ours)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseBundle(t *testing.T) {
	ca := testca.New(t, peer)
	good, err := spiffeBundleOf(ca, 5, time.Minute).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	x5c := func(c *x509.Certificate) string {
		return strings.TrimSpace(strings.NewReplacer("-----BEGIN CERTIFICATE-----", "", "-----END CERTIFICATE-----", "", "\n", "").
			Replace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))))
	}
	root := x5c(ca.Roots()[0])
	leafDoc, err := spiffebundle.FromX509Authorities(peer, ca.Issue(t, "spiffe://peer.test/w").Certificates[:1]).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"good", string(good), ""},
		{"unknown use ignored", strings.Replace(string(good), `"keys":[`, `"keys":[{"use":"something-new","kty":"oct","k":"AAAA"},`, 1), ""},
		{"not json", `keys`, "invalid"},
		{"two objects", string(good) + `{}`, "data after"},
		{"no keys", `{"spiffe_sequence":1}`, "no keys"},
		{"no x509", `{"keys":[]}`, "no x509-svid authority"},
		{"key without use", `{"keys":[{"kty":"EC","x5c":["` + root + `"]}]}`, "no use"},
		{"two certs", `{"keys":[{"use":"x509-svid","kty":"EC","x5c":["` + root + `","` + root + `"]}]}`, "exactly one"},
		{"jwt without kid", `{"keys":[{"use":"x509-svid","kty":"EC","x5c":["` + root + `"]},{"use":"jwt-svid","kty":"EC"}]}`, "without kid"},
		{"negative sequence", `{"keys":[],"spiffe_sequence":-1}`, "spiffe_sequence"},
		{"fractional hint", `{"keys":[],"spiffe_refresh_hint":1.5}`, "spiffe_refresh_hint"},
		{"huge hint", `{"keys":[],"spiffe_refresh_hint":999999999}`, "over"},
		{"leaf as authority", string(leafDoc), "not a CA"},
		{"too big", `{"keys":[],"pad":"` + strings.Repeat("a", federation.MaxBundleSize) + `"}`, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := federation.ParseBundle(peer, []byte(tc.doc))
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("ParseBundle = %v, want %q", err, tc.want)
			}
		})
	}
}
