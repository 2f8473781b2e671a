package authz_test

import (
	"context"
	"crypto/x509"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/revocation"
	"github.com/sigilhq/sigil/internal/testca"
)

// setChecker is an authz.Revocation over a swappable Set.
type setChecker struct {
	set atomic.Pointer[revocation.Set]
}

func (c *setChecker) Check(cert *x509.Certificate) error { return c.set.Load().Check(cert, time.Now()) }

// envoyPEM encodes certs as Envoy's include_peer_certificate does.
func envoyPEM(certs []*x509.Certificate) string {
	return strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(string(testca.CertsPEM(certs)))
}

// A Check whose peer certificate is revoked is denied before the policy
// (which allows it) with reason svid_revoked, and the decision log says
// so; without CRLs it is denied as revocation_unknown; a Check carrying
// only a principal is not checked.
func TestRevokedPeerCertificateDenied(t *testing.T) {
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	good := ca.Issue(t, "spiffe://example.org/ns/shop/sa/frontend")
	bad := ca.Issue(t, "spiffe://example.org/ns/shop/sa/frontend")
	set, err := revocation.NewSet(ca.Certificates()[:1], [][]byte{ca.CRL(t, bad.Certificates[0].SerialNumber)})
	if err != nil {
		t.Fatal(err)
	}
	rc := &setChecker{}
	h := start(t, authz.Config{Engine: newEngine(t, meshPolicy), Revocation: rc})
	tests := []struct {
		name   string
		set    *revocation.Set
		cert   string
		code   code.Code
		reason string
	}{
		{"no CRLs yet", nil, envoyPEM(good.Certificates), code.Code_PERMISSION_DENIED, "revocation_unknown"},
		{"not revoked", set, envoyPEM(good.Certificates), code.Code_OK, "allowed"},
		{"revoked", set, envoyPEM(bad.Certificates), code.Code_PERMISSION_DENIED, "svid_revoked"},
		{"revoked, leaf alone", set, envoyPEM(bad.Certificates[:1]), code.Code_PERMISSION_DENIED, "svid_revoked"},
		{"certificate that does not parse", set, "%zz", code.Code_PERMISSION_DENIED, "revocation_unknown"},
		{"principal only", set, "", code.Code_OK, "allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc.set.Store(tc.set)
			req := loadRequest(t, "01-mtls-allowed-get")
			req.Attributes.Source.Certificate = tc.cert
			req.Attributes.Request.Http.Path = "/items/" + strings.ReplaceAll(tc.name, " ", "-")
			resp, err := h.client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := code.Code(resp.GetStatus().GetCode()); got != tc.code {
				t.Errorf("status = %v, want %v", got, tc.code)
			}
		})
	}
	entries := h.stopAndRead(t)
	if len(entries) != len(tests) {
		t.Fatalf("decision log has %d lines, want %d", len(entries), len(tests))
	}
	for i, e := range entries {
		tc := tests[i]
		if e.Reason != tc.reason {
			t.Errorf("%s: logged reason %q, want %q", tc.name, e.Reason, tc.reason)
		}
		if tc.reason == "svid_revoked" && !strings.Contains(e.Detail, bad.Certificates[0].SerialNumber.Text(16)) {
			t.Errorf("%s: logged detail %q does not name the serial", tc.name, e.Detail)
		}
	}
}
