// Package federation is the end-to-end suite for SPIFFE federation between
// two real Sigil trust domains: bundle endpoints of both profiles,
// relationships from ca.yaml and from the CLI, entries with federates_with,
// and go-spiffe workloads doing mTLS across; see README.md.
package federation

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/pemfile"
)

// Workload uids: one federated workload per trust domain, and one of b.test
// whose entry lacks federates_with. The test process (uid 0) is a federated
// workload on both sides.
const (
	uidA     = 64201
	uidB     = 64202
	uidNoFed = 64203
)

const (
	idA     = "spiffe://a.test/w/fed"
	idB     = "spiffe://b.test/w/fed"
	idNoFed = "spiffe://b.test/w/nofed"
	idRootA = "spiffe://a.test/w/root"
	idRootB = "spiffe://b.test/w/root"
)

var (
	sigil    *e2e.Binary
	mtlspeer string
)

func TestMain(m *testing.M) {
	if _, err := e2e.SetprivPath(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	e2e.Main(m, "federation", func(b *e2e.Binary, dir string) error {
		sigil = b
		var err error
		// The agent suite's go-spiffe spiffetls peer serves here too.
		mtlspeer, err = e2e.BuildPackage(dir, "./hack/e2e/agent/mtlspeer", "mtlspeer")
		return err
	})
}

// domain is one trust domain: a CA with a bundle endpoint and one agent.
type domain struct {
	td                     string
	dir, adminSock, sock   string
	caAddr, bundleAddr     string
	agentID                string
	ca, agent              *e2e.Proc
	caConfig, agentConfigF string
}

func newDomain(t *testing.T, root, td string) *domain {
	t.Helper()
	dir := filepath.Join(root, td)
	for _, d := range []string{dir, filepath.Join(dir, "sock")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &domain{
		td: td, dir: dir,
		adminSock: filepath.Join(dir, "ca", "admin.sock"),
		sock:      filepath.Join(dir, "sock", "agent.sock"),
		caAddr:    e2e.FreeAddr(t), bundleAddr: e2e.FreeAddr(t),
		caConfig: filepath.Join(dir, "ca.yaml"), agentConfigF: filepath.Join(dir, "agent.yaml"),
	}
}

func (d *domain) admin(args ...string) []string { return append(args, "--admin-socket", d.adminSock) }

// startCA writes ca.yaml with federation (the bundle endpoint and any
// relationships given as YAML list items) and starts the CA.
func (d *domain) startCA(t *testing.T, endpoint, relationships string) {
	t.Helper()
	e2e.WriteFile(t, d.caConfig, fmt.Sprintf(`trust_domain: %s
data_dir: %s
server_address: %s
federation:
  min_refresh: 1s
  max_refresh: 10s
  bundle_endpoint:
    address: %s
%s
  relationships:%s
`, d.td, filepath.Join(d.dir, "ca"), d.caAddr, d.bundleAddr, endpoint, relationships), 0o600)
	d.ca = sigil.Start(t, "ca", "run", "--config", d.caConfig)
	e2e.WaitForSocket(t, d.ca, d.adminSock, 30*time.Second)
}

// startAgent makes a join token and the bootstrap bundle, and starts the
// agent.
func (d *domain) startAgent(t *testing.T) {
	t.Helper()
	tok := strings.TrimSpace(sigil.MustRun(t, d.admin("token", "create")...))
	d.agentID = "spiffe://" + d.td + "/sigil/agent/join_token/" + tok
	e2e.WriteFile(t, filepath.Join(d.dir, "bundle.pem"), sigil.MustRun(t, d.admin("bundle", "show", "-o", "pem")...), 0o644)
	e2e.WriteFile(t, d.agentConfigF, fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: %s
socket_path: %s
trust_bundle_file: %s
join_token: %s
`, d.td, d.caAddr, filepath.Join(d.dir, "agent"), d.sock, filepath.Join(d.dir, "bundle.pem"), tok), 0o600)
	d.agent = sigil.Start(t, "agent", "run", "--config", d.agentConfigF)
	e2e.WaitForSocket(t, d.agent, d.sock, 30*time.Second)
}

// entry registers spiffeID for uid under the agent, federated with feds.
func (d *domain) entry(t *testing.T, spiffeID string, uid int, feds ...string) {
	t.Helper()
	args := []string{"entry", "create", "--spiffe-id", spiffeID, "--parent-id", d.agentID, "--selector", fmt.Sprintf("unix:uid:%d", uid)}
	for _, f := range feds {
		args = append(args, "--federates-with", f)
	}
	sigil.MustRun(t, d.admin(args...)...)
}

// roots is the X.509 authorities the CA of td holds for td (its own or a
// fetched one).
func (d *domain) roots(t *testing.T, td string) []*x509.Certificate {
	t.Helper()
	out := sigil.MustRun(t, d.admin("bundle", "show", "-o", "pem", "--trust-domain", td)...)
	certs, err := pemfile.ParseCerts([]byte(out))
	if err != nil {
		t.Fatalf("bundle show --trust-domain %s: %v", td, err)
	}
	return certs
}

// waitFetched waits until the CA has fetched td's bundle from its bundle
// endpoint at least once and the latest fetch succeeded.
func (d *domain) waitFetched(t *testing.T, td string) {
	t.Helper()
	success := regexp.MustCompile(`(?m)^Last success:\s+\d{4}-`)
	noFailures := regexp.MustCompile(`(?m)^Consecutive failures:\s+0$`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, errOut, err := sigil.Run(t, d.admin("federation", "show", "--trust-domain", td)...)
		if err == nil && success.MatchString(out) && noFailures.MatchString(out) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not fetch %s's bundle within 30s: %v\n%s%s", d.td, td, err, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// x509Context fetches the test process's X.509 context from an agent until
// it carries the bundle of want (the CA pushes a fetched bundle to agents).
func x509Context(t *testing.T, d *domain, want string) *workloadapi.X509Context {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := workloadapi.FetchX509Context(timeout(t, 10*time.Second), workloadapi.WithAddr("unix://"+d.sock))
		if err == nil && c.Bundles.Has(spiffeid.RequireTrustDomainFromString(want)) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the X.509 context from %s's agent did not carry %s's bundle within 30s (err %v)", d.td, want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, (*x509.Certificate).Equal)
}

func TestFederatesWith(t *testing.T) {
	setpriv := e2e.Setpriv(t)
	root, err := os.MkdirTemp("", "sigil-e2e-federation-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	a, b := newDomain(t, root, "a.test"), newDomain(t, root, "b.test")

	// 1. a.test serves https_spiffe and fetches b.test over https_web (its
	// relationship in ca.yaml, trusting the test Web PKI root); b.test serves
	// https_web and fetches a.test over https_spiffe (its relationship made
	// with the CLI, with a.test's bundle as the initial one).
	webRoot, webCert, webKey := e2e.WebPKI(t, b.dir)
	a.startCA(t, "    profile: https_spiffe", fmt.Sprintf(`
    - trust_domain: b.test
      bundle_endpoint_url: https://%s
      profile: https_web
      web_roots_file: %s`, b.bundleAddr, webRoot))
	b.startCA(t, fmt.Sprintf("    profile: https_web\n    cert_file: %s\n    key_file: %s", webCert, webKey), " []")
	aBundle := filepath.Join(root, "a.test.json")
	e2e.WriteFile(t, aBundle, sigil.MustRun(t, a.admin("bundle", "show", "-o", "spiffe")...), 0o644)
	sigil.MustRun(t, b.admin("federation", "create", "--trust-domain", "a.test", "--bundle-endpoint-url", "https://"+a.bundleAddr,
		"--endpoint-spiffe-id", "spiffe://a.test/sigil/ca", "--bundle", aBundle)...)
	a.waitFetched(t, "b.test")
	b.waitFetched(t, "a.test")
	if !sameCerts(a.roots(t, "b.test"), b.roots(t, "b.test")) {
		t.Fatal("a.test holds another b.test bundle than b.test's own")
	}
	if !sameCerts(b.roots(t, "a.test"), a.roots(t, "a.test")) {
		t.Fatal("b.test holds another a.test bundle than a.test's own")
	}

	// 2. Agents and entries: the federated workloads and the test process
	// federate with the peer; nofed does not.
	a.startAgent(t)
	b.startAgent(t)
	a.entry(t, idA, uidA, "b.test")
	a.entry(t, idRootA, 0, "b.test")
	b.entry(t, idB, uidB, "a.test")
	b.entry(t, idRootB, 0, "a.test")
	b.entry(t, idNoFed, uidNoFed)

	t.Run("the X.509 context carries the peer's bundle", func(t *testing.T) {
		for _, c := range []struct {
			d        *domain
			peer     *domain
			self, id string
		}{{a, b, "a.test", idRootA}, {b, a, "b.test", idRootB}} {
			ctx := x509Context(t, c.d, c.peer.td)
			if len(ctx.SVIDs) != 1 || ctx.SVIDs[0].ID.String() != c.id {
				t.Fatalf("%s: SVIDs %v, want %s", c.d.td, ctx.SVIDs, c.id)
			}
			peer, _ := ctx.Bundles.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString(c.peer.td))
			if !sameCerts(peer.X509Authorities(), c.peer.roots(t, c.peer.td)) {
				t.Fatalf("%s: the X.509 context's %s bundle is not %s's own", c.d.td, c.peer.td, c.peer.td)
			}
		}
	})

	t.Run("mTLS both ways between federated workloads", func(t *testing.T) {
		pa, pb := e2e.AsUID(setpriv, mtlspeer, uidA), e2e.AsUID(setpriv, mtlspeer, uidB)
		for _, c := range []struct {
			name                  string
			server, client        *e2e.Binary
			serverSock, clientSck string
			serverID, clientID    string
		}{
			{"a.test serves, b.test dials", pa, pb, a.sock, b.sock, idA, idB},
			{"b.test serves, a.test dials", pb, pa, b.sock, a.sock, idB, idA},
		} {
			addr := e2e.FreeAddr(t)
			srv := c.server.Start(t, "-socket", c.serverSock, "-listen", addr, "-peer", c.clientID)
			srv.WaitForOutput(t, "listening", 30*time.Second)
			out, errOut, err := c.client.Run(t, "-socket", c.clientSck, "-dial", addr, "-peer", c.serverID)
			if err != nil || strings.TrimSpace(out) != "reply to hello" {
				t.Fatalf("%s: %v\n%s%s", c.name, err, out, errOut)
			}
			srv.Kill(t)
		}
	})

	t.Run("an entry without federates_with is refused", func(t *testing.T) {
		nofed, pa := e2e.AsUID(setpriv, mtlspeer, uidNoFed), e2e.AsUID(setpriv, mtlspeer, uidA)
		// nofed dials a.test's workload (which would accept it): nofed
		// cannot verify a.test and refuses the server.
		addr := e2e.FreeAddr(t)
		srv := pa.Start(t, "-socket", a.sock, "-listen", addr, "-peer", idNoFed)
		srv.WaitForOutput(t, "listening", 30*time.Second)
		out, errOut, err := nofed.Run(t, "-socket", b.sock, "-dial", addr, "-peer", idA)
		if err == nil || !strings.Contains(errOut, `trust domain "a.test"`) {
			t.Fatalf("nofed dialing a.test: err %v, want a.test refused\n%s%s", err, out, errOut)
		}
		srv.Kill(t)
		// a.test's workload dials nofed: nofed cannot verify the client.
		addr = e2e.FreeAddr(t)
		srv = nofed.Start(t, "-socket", b.sock, "-listen", addr, "-peer", idA)
		srv.WaitForOutput(t, "listening", 30*time.Second)
		out, errOut, err = pa.Run(t, "-socket", a.sock, "-dial", addr, "-peer", idNoFed)
		if err == nil || !strings.Contains(errOut, "tls:") {
			t.Fatalf("a.test dialing nofed: err %v, want a TLS alert from nofed\n%s%s", err, out, errOut)
		}
		srv.Kill(t)
	})

	t.Run("a JWT-SVID of a.test validates at b.test", func(t *testing.T) {
		svid, err := workloadapi.FetchJWTSVID(timeout(t, 10*time.Second), jwtsvid.Params{Audience: idRootB},
			workloadapi.WithAddr("unix://"+a.sock))
		if err != nil {
			t.Fatalf("fetch jwt-svid from a.test: %v", err)
		}
		bundles, err := workloadapi.FetchJWTBundles(timeout(t, 10*time.Second), workloadapi.WithAddr("unix://"+b.sock))
		if err != nil {
			t.Fatalf("fetch jwt bundles from b.test: %v", err)
		}
		if !bundles.Has(spiffeid.RequireTrustDomainFromString("a.test")) {
			t.Fatal("b.test's JWT bundles lack a.test")
		}
		got, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{idRootB})
		if err != nil || got.ID.String() != idRootA {
			t.Fatalf("validate with b.test's JWT bundles: %v, %v", got, err)
		}
		client, err := workloadapi.New(timeout(t, 10*time.Second), workloadapi.WithAddr("unix://"+b.sock))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if got, err := client.ValidateJWTSVID(timeout(t, 10*time.Second), svid.Marshal(), idRootB); err != nil || got.ID.String() != idRootA {
			t.Fatalf("ValidateJWTSVID at b.test's agent: %v, %v", got, err)
		}
	})

	t.Run("SDS serves the peer's bundle and ALL includes it", func(t *testing.T) {
		client, err := envoytest.Dial(a.sock, envoytest.Node("sidecar~127.0.0.1~e2e-fed~a.test"))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		resp, err := client.Fetch(timeout(t, 10*time.Second), "spiffe://b.test", "ALL")
		if err != nil {
			t.Fatalf("FetchSecrets: %v", err)
		}
		secrets := map[string]*tlsv3.Secret{}
		for _, r := range resp.GetResources() {
			s, err := envoytest.DecodeSecret(r)
			if err != nil {
				t.Fatal(err)
			}
			secrets[s.GetName()] = s
		}
		bRoots := b.roots(t, "b.test")
		peer := secrets["spiffe://b.test"]
		if peer == nil {
			t.Fatalf("no spiffe://b.test secret among %v", secrets)
		}
		got, err := pemfile.ParseCerts(peer.GetValidationContext().GetTrustedCa().GetInlineBytes())
		if err != nil || !sameCerts(got, bRoots) {
			t.Fatalf("spiffe://b.test trusted CA: %v, %v; want b.test's roots", got, err)
		}
		all := secrets["ALL"]
		if all == nil {
			t.Fatal("no ALL secret")
		}
		var cfg tlsv3.SPIFFECertValidatorConfig
		if err := all.GetValidationContext().GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			t.Fatalf("ALL: %v", err)
		}
		var tds []string
		for _, d := range cfg.GetTrustDomains() {
			tds = append(tds, d.GetName())
			if d.GetName() == "b.test" {
				got, err := pemfile.ParseCerts(d.GetTrustBundle().GetInlineBytes())
				if err != nil || !sameCerts(got, bRoots) {
					t.Fatalf("ALL's b.test bundle: %v, %v", got, err)
				}
			}
		}
		if !slices.Equal(tds, []string{"a.test", "b.test"}) {
			t.Fatalf("ALL validates trust domains %v, want [a.test b.test]", tds)
		}
	})
}
