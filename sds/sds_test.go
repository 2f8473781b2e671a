package sds_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/pemfile"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
	"github.com/sigilhq/sigil/sds"
)

// checkDefault asserts that def is exactly want (chain and key) and that
// its chain verifies against the roots in rootCA.
func checkDefault(t *testing.T, def, rootCA *tlsv3.Secret, want *x509svid.SVID) {
	t.Helper()
	chain, key, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tc := def.GetTlsCertificate()
	if !bytes.Equal(tc.GetCertificateChain().GetInlineBytes(), chain) {
		t.Errorf("default certificate chain is not the caller's current SVID")
	}
	if !bytes.Equal(tc.GetPrivateKey().GetInlineBytes(), key) {
		t.Errorf("default private key is not the caller's current SVID key")
	}
	certs, err := pemfile.ParseCerts(tc.GetCertificateChain().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pemfile.ParseCerts(rootCA.GetValidationContext().GetTrustedCa().GetInlineBytes())
	if err != nil {
		t.Fatalf("ROOTCA: %v", err)
	}
	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("default does not verify against ROOTCA: %v", err)
	}
}

func TestDefaultIsCurrentSVIDAndVerifiesAgainstROOTCA(t *testing.T) {
	h := newHarness(t)
	cart := h.ca.Issue(t, cartID)
	// Two identities: default is the one with the smallest entry ID.
	h.setEntry("entry-b", h.ca.Issue(t, otherID), cartUID)
	h.setEntry("entry-a", cart, cartUID)

	t.Run("sotw", func(t *testing.T) {
		s, err := h.client.StreamSecrets(as(t, cartUID), "default", "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		checkDefault(t, s.Secret("default"), s.Secret("ROOTCA"), cart)
	})
	t.Run("delta", func(t *testing.T) {
		d, err := h.client.DeltaSecrets(as(t, cartUID), "default", "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := d.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		checkDefault(t, d.Secret("default"), d.Secret("ROOTCA"), cart)
	})
	t.Run("fetch", func(t *testing.T) {
		resp, err := h.client.Fetch(as(t, cartUID), "ROOTCA", "default")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*tlsv3.Secret{}
		for _, a := range resp.GetResources() {
			s, err := envoytest.DecodeSecret(a)
			if err != nil {
				t.Fatal(err)
			}
			got[s.GetName()] = s
		}
		checkDefault(t, got["default"], got["ROOTCA"], cart)
	})
}

// TestResourceNames fetches every kind of name and a few that fail.
func TestResourceNames(t *testing.T) {
	h := newHarness(t, func(c *sds.Config) { c.DefaultSVIDName = "svid" })
	cart, other := h.ca.Issue(t, cartID), h.ca.Issue(t, otherID)
	h.setEntry("e1", cart, cartUID)
	h.setEntry("e2", other, cartUID, "unix:gid:50")
	h.src.SetFederated(h.fedCA.TrustDomain(), spiffebundle.FromX509Authorities(h.fedCA.TrustDomain(), h.fedCA.Roots()))

	pemOf := func(certs []*x509.Certificate) []byte {
		var out []byte
		for _, c := range certs {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		return out
	}
	tests := []struct {
		name  string
		sels  []string
		fetch string
		code  codes.Code
		check func(t *testing.T, s *tlsv3.Secret)
	}{
		{name: "configured default name", sels: []string{cartUID}, fetch: "svid", check: func(t *testing.T, s *tlsv3.Secret) {
			if !sameSerial(leaf(t, s), cart.Certificates[0]) {
				t.Error("svid is not the cart SVID")
			}
		}},
		{name: "the old default name is no longer special", sels: []string{cartUID}, fetch: "default", code: codes.InvalidArgument},
		{name: "SPIFFE ID of an identity the caller holds", sels: []string{cartUID, "unix:gid:50"}, fetch: otherID, check: func(t *testing.T, s *tlsv3.Secret) {
			if !sameSerial(leaf(t, s), other.Certificates[0]) {
				t.Error("not the other SVID")
			}
		}},
		{name: "SPIFFE ID the caller does not hold", sels: []string{cartUID}, fetch: otherID, code: codes.NotFound},
		{name: "own trust domain", sels: []string{cartUID}, fetch: "spiffe://example.org", check: func(t *testing.T, s *tlsv3.Secret) {
			if !bytes.Equal(s.GetValidationContext().GetTrustedCa().GetInlineBytes(), pemOf(h.ca.Roots())) {
				t.Error("not the example.org roots")
			}
		}},
		{name: "federated trust domain", sels: []string{cartUID}, fetch: "spiffe://partner.test", check: func(t *testing.T, s *tlsv3.Secret) {
			if !bytes.Equal(s.GetValidationContext().GetTrustedCa().GetInlineBytes(), pemOf(h.fedCA.Roots())) {
				t.Error("not the partner.test roots")
			}
		}},
		{name: "unknown trust domain", sels: []string{cartUID}, fetch: "spiffe://nowhere.test", code: codes.NotFound},
		{name: "ALL holds every trust domain", sels: []string{cartUID}, fetch: "ALL", check: func(t *testing.T, s *tlsv3.Secret) {
			cv := s.GetValidationContext().GetCustomValidatorConfig()
			if cv.GetName() != sds.SPIFFEValidatorName {
				t.Fatalf("custom validator %q", cv.GetName())
			}
			cfg := &tlsv3.SPIFFECertValidatorConfig{}
			if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				t.Fatal(err)
			}
			var tds []string
			for _, td := range cfg.GetTrustDomains() {
				tds = append(tds, td.GetName())
			}
			if !slices.Equal(tds, []string{"example.org", "partner.test"}) {
				t.Errorf("trust domains %v", tds)
			}
			if !bytes.Equal(cfg.GetTrustDomains()[1].GetTrustBundle().GetInlineBytes(), pemOf(h.fedCA.Roots())) {
				t.Error("partner.test bundle differs")
			}
		}},
		{name: "ROOTCA without an identity", sels: []string{"unix:uid:4242"}, fetch: "ROOTCA", check: func(t *testing.T, s *tlsv3.Secret) {
			if s.GetValidationContext() == nil {
				t.Error("not a validation context")
			}
		}},
		{name: "default without an identity", sels: []string{"unix:uid:4242"}, fetch: "svid", code: codes.NotFound},
		{name: "malformed SPIFFE ID", sels: []string{cartUID}, fetch: "spiffe://Bad Domain/x", code: codes.InvalidArgument},
		{name: "not attestable", fetch: "svid", code: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.client.Fetch(as(t, tt.sels...), tt.fetch)
			if status.Code(err) != tt.code {
				t.Fatalf("fetch %q: %v, want code %v", tt.fetch, err, tt.code)
			}
			if tt.code != codes.OK {
				return
			}
			if len(resp.GetResources()) != 1 || resp.GetVersionInfo() == "" {
				t.Fatalf("response %v", resp)
			}
			s, err := envoytest.DecodeSecret(resp.GetResources()[0])
			if err != nil {
				t.Fatal(err)
			}
			if s.GetName() != tt.fetch {
				t.Errorf("secret name %q, want %q", s.GetName(), tt.fetch)
			}
			tt.check(t, s)
		})
	}
}

func TestRotationReachesEveryOpenStream(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	var (
		sotw  []*envoytest.SotW
		delta []*envoytest.Delta
	)
	for range 4 {
		s, err := h.client.StreamSecrets(as(t, cartUID), "default", "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		sotw = append(sotw, s)
		d, err := h.client.DeltaSecrets(as(t, cartUID), "default", "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := d.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		delta = append(delta, d)
	}

	t.Run("svid rotation", func(t *testing.T) {
		rotated := h.ca.Issue(t, cartID)
		h.setEntry("e1", rotated, cartUID)
		for i, s := range sotw {
			resp, err := s.Next(as(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetResources()) != 2 {
				t.Errorf("sotw %d: %d resources, want the full state (2)", i, len(resp.GetResources()))
			}
			checkDefault(t, s.Secret("default"), s.Secret("ROOTCA"), rotated)
		}
		for i, d := range delta {
			resp, err := d.Next(as(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "default" {
				t.Errorf("delta %d: want only default, got %v", i, resp.GetResources())
			}
			checkDefault(t, d.Secret("default"), d.Secret("ROOTCA"), rotated)
		}
	})
	t.Run("bundle change", func(t *testing.T) {
		next := h.ca.Chain(t, 1) // same root; publish a second root as well
		extra := h.fedCA.Roots()[0]
		h.src.SetBundle(spiffebundle.FromX509Authorities(h.ca.TrustDomain(), append(next.Roots(), extra)))
		for _, s := range sotw {
			if _, err := s.Next(as(t)); err != nil {
				t.Fatal(err)
			}
			roots, _ := pemfile.ParseCerts(s.Secret("ROOTCA").GetValidationContext().GetTrustedCa().GetInlineBytes())
			if len(roots) != 2 {
				t.Errorf("sotw ROOTCA holds %d roots, want 2", len(roots))
			}
		}
		for _, d := range delta {
			resp, err := d.Next(as(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "ROOTCA" {
				t.Errorf("delta: want only ROOTCA, got %v", resp.GetResources())
			}
		}
	})
	if got := h.counter(t, "sigil_sds_streams", "mode", "sotw"); got != 4 {
		t.Errorf("sigil_sds_streams{mode=sotw} = %v, want 4", got)
	}
}

func TestPendingNameIsSentWhenAvailable(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)

	t.Run("sotw", func(t *testing.T) {
		s, err := h.client.StreamSecrets(as(t, cartUID), "default", otherID)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		resp, err := s.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 1 || s.Secret(otherID) != nil {
			t.Fatalf("first response: want only default, got %d resources", len(resp.GetResources()))
		}
		other := h.ca.Issue(t, otherID)
		h.setEntry("e2", other, cartUID)
		if _, err := s.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		if s.Secret(otherID) == nil || !sameSerial(leaf(t, s.Secret(otherID)), other.Certificates[0]) {
			t.Fatal("the pending SVID was not sent once it existed")
		}
		h.src.Delete("e2")
	})
	t.Run("delta", func(t *testing.T) {
		d, err := h.client.DeltaSecrets(as(t, cartUID), otherID)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Subscribe("default"); err != nil { // a second request before anything arrived
			t.Fatal(err)
		}
		for d.Secret("default") == nil {
			if _, err := d.Next(as(t)); err != nil {
				t.Fatal(err)
			}
		}
		if d.Secret(otherID) != nil {
			t.Fatal("other sent before it existed")
		}
		h.setEntry("e2", h.ca.Issue(t, otherID), cartUID)
		resp, err := d.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != otherID {
			t.Fatalf("want only %s, got %v", otherID, resp.GetResources())
		}
	})
	t.Run("caller with no identity waits for default", func(t *testing.T) {
		const uid = "unix:uid:2000"
		s, err := h.client.StreamSecrets(as(t, uid), "default")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		svid := h.ca.Issue(t, "spiffe://example.org/late")
		h.setEntry("late", svid, uid)
		if _, err := s.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		if !sameSerial(leaf(t, s.Secret("default")), svid.Certificates[0]) {
			t.Fatal("late default is not the new SVID")
		}
	})
}

func TestNACKedVersionIsNotResent(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	unrelated := func() { // a change that leaves "default" as it is
		h.src.SetFederated(h.fedCA.TrustDomain(), spiffebundle.FromX509Authorities(h.fedCA.TrustDomain(), h.fedCA.Roots()))
	}

	t.Run("sotw", func(t *testing.T) {
		s, err := h.client.StreamSecrets(as(t, cartUID), "default")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
		rejected, err := s.Recv(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.NACK(rejected, "test rejects this certificate"); err != nil {
			t.Fatal(err)
		}
		h.waitCounter(t, 1, "sigil_sds_nacks_total", "mode", "sotw")
		unrelated()
		third := h.ca.Issue(t, cartID)
		h.setEntry("e1", third, cartUID)
		resp, err := s.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetVersionInfo() == rejected.GetVersionInfo() {
			t.Fatal("the NACKed version was sent again")
		}
		if !sameSerial(leaf(t, s.Secret("default")), third.Certificates[0]) {
			t.Fatal("the response after the NACK is not the next rotation")
		}
		if got := h.counter(t, "sigil_sds_nacks_total", "mode", "sotw"); got != 1 {
			t.Errorf("sigil_sds_nacks_total{mode=sotw} = %v, want 1", got)
		}
		if !strings.Contains(h.logs.String(), "test rejects this certificate") {
			t.Error("the NACK's error_detail was not logged")
		}
	})
	t.Run("delta", func(t *testing.T) {
		d, err := h.client.DeltaSecrets(as(t, cartUID), "default")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := d.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
		rejected, err := d.Recv(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.NACK(rejected, "no thanks"); err != nil {
			t.Fatal(err)
		}
		h.waitCounter(t, 1, "sigil_sds_nacks_total", "mode", "delta")
		h.src.SetFederated(h.fedCA.TrustDomain(), nil)
		third := h.ca.Issue(t, cartID)
		h.setEntry("e1", third, cartUID)
		if _, err := d.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		if !sameSerial(leaf(t, d.Secret("default")), third.Certificates[0]) {
			t.Fatal("the response after the NACK is not the next rotation")
		}
		if got := h.counter(t, "sigil_sds_nacks_total", "mode", "delta"); got != 1 {
			t.Errorf("sigil_sds_nacks_total{mode=delta} = %v, want 1", got)
		}
	})
}

func TestStaleNonceIsIgnored(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	s, err := h.client.StreamSecrets(as(t, cartUID), "default")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	// A request answering a response that is not the last one: its new
	// names must be ignored.
	if err := s.Send(&discoveryv3.DiscoveryRequest{VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce() + "-stale",
		ResourceNames: []string{"default", "ROOTCA"}, TypeUrl: sds.SecretTypeURL}); err != nil {
		t.Fatal(err)
	}
	h.waitCounter(t, 1, "sigil_sds_stale_requests_total", "mode", "sotw")
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	resp, err := s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 {
		t.Fatalf("the stale request changed the subscription: %d resources", len(resp.GetResources()))
	}
	// The same change with the right nonce is answered at once.
	if err := s.SetNames("default", "ROOTCA"); err != nil {
		t.Fatal(err)
	}
	resp, err = s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 2 || s.Secret("ROOTCA") == nil {
		t.Fatalf("changed names: %d resources, want 2", len(resp.GetResources()))
	}
}

func TestDeltaRemovalAndReconnect(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	d, err := h.client.DeltaSecrets(as(t, cartUID), "default", cartID, "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if d.Secret("default") == nil || d.Secret(cartID) == nil || d.Secret("ROOTCA") == nil {
		t.Fatalf("want three secrets, have %v", d.Versions())
	}

	t.Run("identity removed", func(t *testing.T) {
		h.src.Delete("e1")
		resp, err := d.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		removed := slices.Sorted(slices.Values(resp.GetRemovedResources()))
		if !slices.Equal(removed, []string{"default", cartID}) || len(resp.GetResources()) != 0 {
			t.Fatalf("removed %v, resources %d", removed, len(resp.GetResources()))
		}
		if d.Secret("default") != nil {
			t.Fatal("client still holds default")
		}
		h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
		resp, err = d.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 2 {
			t.Fatalf("re-added identity: %d resources, want 2", len(resp.GetResources()))
		}
	})
	t.Run("reconnect sends only what changed", func(t *testing.T) {
		// The client held an older ROOTCA and the current SVIDs: only
		// ROOTCA must come back.
		d.SetVersion("ROOTCA", "an-older-version")
		if err := d.Reconnect(as(t, cartUID)); err != nil {
			t.Fatal(err)
		}
		resp, err := d.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "ROOTCA" || len(resp.GetRemovedResources()) != 0 {
			t.Fatalf("after reconnect: resources %v, removed %v; want only ROOTCA", resp.GetResources(), resp.GetRemovedResources())
		}
	})
	t.Run("reconnect holding a revoked identity", func(t *testing.T) {
		d.Close()
		h.src.Delete("e1")
		if err := d.Reconnect(as(t, cartUID)); err != nil {
			t.Fatal(err)
		}
		resp, err := d.Next(as(t))
		if err != nil {
			t.Fatal(err)
		}
		removed := slices.Sorted(slices.Values(resp.GetRemovedResources()))
		if !slices.Equal(removed, []string{"default", cartID}) {
			t.Fatalf("removed %v", removed)
		}
	})
}

// TestSotWRemoval: state of the world cannot name a removed secret, but the
// stream still gets a new version without it (Envoy keeps the old secret
// until it expires; Delta removes it).
func TestSotWRemoval(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	s, err := h.client.StreamSecrets(as(t, cartUID), "default")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	h.src.Delete("e1")
	resp, err := s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 0 || resp.GetVersionInfo() == first.GetVersionInfo() {
		t.Fatalf("after removal: %d resources, version %q (was %q)", len(resp.GetResources()), resp.GetVersionInfo(), first.GetVersionInfo())
	}
	svid := h.ca.Issue(t, cartID)
	h.setEntry("e1", svid, cartUID)
	if _, err := s.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if !sameSerial(leaf(t, s.Secret("default")), svid.Certificates[0]) {
		t.Fatal("re-issued identity not sent")
	}
}

func TestSotWReconnectGetsFullState(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	s, err := h.client.StreamSecrets(as(t, cartUID), "default", "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reconnect(as(t, cartUID)); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Next(as(t))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersionInfo() != first.GetVersionInfo() || len(resp.GetResources()) != 2 {
		t.Fatalf("after reconnect: version %q (was %q), %d resources", resp.GetVersionInfo(), first.GetVersionInfo(), len(resp.GetResources()))
	}
	if !strings.Contains(h.logs.String(), "sidecar~10.0.0.1~cart-1~shop.svc") {
		t.Error("the node of the first request was not logged")
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
	tests := []struct {
		name string
		sels []string
		req  *discoveryv3.DiscoveryRequest
		code codes.Code
	}{
		{name: "unattestable caller", req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}}, code: codes.PermissionDenied},
		{name: "another resource type", sels: []string{cartUID}, code: codes.InvalidArgument,
			req: &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}},
		{name: "too many names", sels: []string{cartUID}, code: codes.InvalidArgument,
			req: &discoveryv3.DiscoveryRequest{ResourceNames: make([]string, sds.MaxResourceNames+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name+" sotw", func(t *testing.T) {
			s, err := h.client.StreamSecrets(as(t, tt.sels...))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Send(tt.req); err != nil {
				t.Fatal(err)
			}
			for {
				_, err := s.Recv(as(t))
				if err == nil {
					continue
				}
				if status.Code(err) != tt.code {
					t.Fatalf("stream ended with %v, want %v", err, tt.code)
				}
				break
			}
		})
		t.Run(tt.name+" delta", func(t *testing.T) {
			d, err := h.client.DeltaSecrets(as(t, tt.sels...), tt.req.GetResourceNames()...)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if tt.req.GetTypeUrl() != "" {
				if err := d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: tt.req.GetTypeUrl()}); err != nil {
					t.Fatal(err)
				}
			}
			for {
				_, err := d.Recv(as(t))
				if err == nil {
					continue
				}
				if status.Code(err) != tt.code {
					t.Fatalf("stream ended with %v, want %v", err, tt.code)
				}
				break
			}
		})
		t.Run(tt.name+" fetch", func(t *testing.T) {
			_, err := h.client.Fetch(as(t, tt.sels...), tt.req.GetResourceNames()...)
			if tt.req.GetTypeUrl() != "" {
				return // Fetch always sends the secret type
			}
			if status.Code(err) != tt.code {
				t.Fatalf("fetch: %v, want %v", err, tt.code)
			}
		})
	}
	if got := h.counter(t, "sigil_sds_attestation_failures_total"); got != 3 {
		t.Errorf("sigil_sds_attestation_failures_total = %v, want 3", got)
	}
}

func TestNewChecksConfig(t *testing.T) {
	src, att := workloadtest.New(t, testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))), mdAttestor{}
	tests := []struct {
		name string
		cfg  sds.Config
		want string
	}{
		{name: "no source", cfg: sds.Config{Attestor: att}, want: "source is required"},
		{name: "no attestor", cfg: sds.Config{Source: src}, want: "attestor is required"},
		{name: "name clash", cfg: sds.Config{Source: src, Attestor: att, RootCAName: "default"}, want: "must differ"},
		{name: "name looks like a SPIFFE ID", cfg: sds.Config{Source: src, Attestor: att, AllBundlesName: "spiffe://x"}, want: "must not start with spiffe://"},
		{name: "negative pending timeout", cfg: sds.Config{Source: src, Attestor: att, PendingTimeout: -time.Second}, want: "pending timeout -1s is negative"},
		{name: "defaults", cfg: sds.Config{Source: src, Attestor: att}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sds.New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
