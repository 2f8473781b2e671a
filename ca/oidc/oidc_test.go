package oidc_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/oidc"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
)

// TestGoOIDCVerifiesJWTSVID: go-oidc, given only the issuer URL, discovers
// the JWKS and verifies a JWT-SVID the CA minted.
func TestGoOIDCVerifiesJWTSVID(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String() + "/td/example"
	td := spiffeid.RequireTrustDomainFromString("example.org")
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km := keys.NewMemory()
	up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: filepath.Join(t.TempDir(), "root.crt")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.New(ca.Config{TrustDomain: td, Store: st, Keys: km, Upstream: up, JWTIssuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	srv, err := oidc.New(oidc.Config{Issuer: issuer, Keys: c})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })

	id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/cart")
	tok, err := c.MintJWTSVID(ctx, id, ca.JWTParams{Audience: []string{"sts.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	provider, err := gooidc.NewProvider(gooidc.ClientContext(ctx, &http.Client{Timeout: 5 * time.Second}), issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	v := provider.Verifier(&gooidc.Config{ClientID: "sts.example.com"})
	got, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("go-oidc verify: %v", err)
	}
	if got.Subject != id.String() || got.Issuer != issuer {
		t.Fatalf("verified sub %q iss %q", got.Subject, got.Issuer)
	}
	// Another audience, or a token not from this CA, is refused.
	if _, err := provider.Verifier(&gooidc.Config{ClientID: "other"}).Verify(ctx, tok); err == nil {
		t.Fatal("verified a token for another audience")
	}
	forged := tok[:strings.LastIndex(tok, ".")+1] + "AAAA"
	if _, err := v.Verify(ctx, forged); err == nil {
		t.Fatal("verified a token with a bad signature")
	}
}

func TestIssuerMustBeAURL(t *testing.T) {
	for _, iss := range []string{"", "example.org", "ftp://x", "https://x/?a=b", "https://x/#f", "https://u@x"} {
		if _, err := oidc.New(oidc.Config{Issuer: iss, Keys: nil}); err == nil {
			t.Errorf("issuer %q accepted", iss)
		}
	}
}
