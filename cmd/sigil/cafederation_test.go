package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/caconfig"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/testca"
)

func freePort(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	return port
}

// TestTwoCAsFederate runs two real CA wirings (buildCA) that federate with
// each other: a.test serves its bundle over https_spiffe and b.test over
// https_web; b.test's relationship comes from ca.yaml with an initial
// bundle file, a.test's from the store (as `sigil federation create`
// makes it). Each ends up holding the other's current bundle.
func TestTwoCAsFederate(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	portA, portB := freePort(t), freePort(t)

	cfgA, err := caconfig.File{TrustDomain: "a.test", DataDir: filepath.Join(dir, "a"), KeyManager: caconfig.KeyManagerFile{Type: "memory"},
		Federation: caconfig.FederationFile{MinRefresh: "1s", BundleEndpoint: caconfig.BundleEndpointFile{Address: "127.0.0.1:" + portA}}}.Validate()
	if err != nil {
		t.Fatal(err)
	}
	a, err := buildCA(ctx, cfgA, slog.New(slog.DiscardHandler), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	bundleA, err := a.CA.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	docA, err := bundleA.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	fileA := filepath.Join(dir, "a-bundle.json")
	web := testca.New(t, spiffeid.RequireTrustDomainFromString("web.test"))
	svid := web.Issue(t, "spiffe://web.test/b", testca.WithDNSNames("localhost"))
	chain, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	certB, keyB := filepath.Join(dir, "b-cert.pem"), filepath.Join(dir, "b-key.pem")
	for path, data := range map[string][]byte{fileA: docA, certB: chain, keyB: key} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	cfgB, err := caconfig.File{TrustDomain: "b.test", DataDir: filepath.Join(dir, "b"), KeyManager: caconfig.KeyManagerFile{Type: "memory"},
		Federation: caconfig.FederationFile{
			MinRefresh:     "1s",
			BundleEndpoint: caconfig.BundleEndpointFile{Address: "127.0.0.1:" + portB, Profile: "https_web", CertFile: certB, KeyFile: keyB},
			Relationships: []caconfig.RelationshipFile{{TrustDomain: "a.test", BundleEndpointURL: "https://127.0.0.1:" + portA + "/",
				Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://a.test/sigil/ca", BundleFile: fileA}},
		}}.Validate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildCA(ctx, cfgB, slog.New(slog.DiscardHandler), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.Store.CreateFederation(ctx, "test", store.FederationRelationship{TrustDomain: "b.test",
		BundleEndpointURL: "https://localhost:" + portB + "/", Profile: "https_web", WebRootsPEM: testca.CertsPEM(web.Roots())}); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done; <-done }()

	holds := func(holder *caStack, td string, of *caStack) bool {
		got, err := holder.Store.GetBundle(ctx, td)
		if err != nil {
			return false
		}
		want, err := of.Store.GetBundle(ctx, td)
		return err == nil && got.Sequence == want.Sequence && len(got.X509Authorities) == len(want.X509Authorities) && len(got.X509Authorities) > 0
	}
	deadline := time.Now().Add(30 * time.Second)
	for !(holds(a, "b.test", b) && holds(b, "a.test", a)) {
		if time.Now().After(deadline) {
			t.Fatalf("no exchange of bundles within 30s: a holds b's: %v (status %+v); b holds a's: %v (status %+v)",
				holds(a, "b.test", b), a.fed.refresher.Statuses(), holds(b, "a.test", a), b.fed.refresher.Statuses())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, s := range append(a.fed.refresher.Statuses(), b.fed.refresher.Statuses()...) {
		if s.LastSuccess.IsZero() {
			t.Errorf("%s: no successful refresh: %+v", s.TrustDomain, s)
		}
	}
}
