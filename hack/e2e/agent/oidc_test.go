package agent

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/internal/e2e"
)

// TestOIDCDiscoveryVerifiesAgentJWTSVID: an agent enrolled with
// `sigil token create --spiffe-id` (a node alias) serves a JWT-SVID for an
// entry parented to that alias, and go-oidc verifies it knowing only the
// CA's issuer URL (oidc_discovery in ca.yaml, plain HTTP).
func TestOIDCDiscoveryVerifiesAgentJWTSVID(t *testing.T) {
	e := newEnv(t)
	oidcAddr := e2e.FreeAddr(t)
	issuer := "http://" + oidcAddr
	e2e.WriteFile(t, e.caConfig, fmt.Sprintf(`trust_domain: %s
data_dir: %s/ca
server_address: %s
jwt_issuer: %s
oidc_discovery:
  address: %s
`, td, e.dir, e.caAddr, issuer, oidcAddr), 0o600)
	e.startCA(t)

	// 1. A join token naming the node alias; an entry for this process
	// (uid 0) parented to the alias, not to the (unknown) agent ID.
	const alias = "spiffe://" + td + "/node/oidc"
	tok := strings.TrimSpace(sigil.MustRun(t, e.admin("token", "create", "--spiffe-id", alias)...))
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idRoot, "--parent-id", alias, "--selector", "unix:uid:0")...)
	e2e.WriteFile(t, e.dir+"/bundle.pem", sigil.MustRun(t, e.admin("bundle", "show", "--format", "pem")...), 0o644)
	e2e.WriteFile(t, e.agentConfig, fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: agent
socket_path: %s
trust_bundle_file: bundle.pem
join_token: %s
`, td, e.caAddr, e.agentSock, tok), 0o600)
	e.startAgent(t)

	// 2. The workload fetches a JWT-SVID from the agent.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wc, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+e.agentSock))
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	var svid *jwtsvid.SVID
	for {
		svid, err = wc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "sts.example.com"})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("fetch jwt-svid through the node alias: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if svid.ID.String() != idRoot {
		t.Fatalf("jwt-svid for %s, want %s", svid.ID, idRoot)
	}

	// 3. go-oidc: discovery from the issuer URL, JWKS, signature, iss, aud.
	provider, err := gooidc.NewProvider(gooidc.ClientContext(ctx, &http.Client{Timeout: 5 * time.Second}), issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery at %s: %v", issuer, err)
	}
	tokVerified, err := provider.Verifier(&gooidc.Config{ClientID: "sts.example.com"}).Verify(ctx, svid.Marshal())
	if err != nil {
		t.Fatalf("go-oidc verify: %v", err)
	}
	if tokVerified.Subject != idRoot {
		t.Fatalf("verified subject %s", tokVerified.Subject)
	}
}
