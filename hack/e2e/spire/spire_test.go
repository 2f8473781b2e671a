// Package spire is the end-to-end suite for SPIFFE federation between a
// real Sigil trust domain and a real SPIRE v1.14.5 server and agent; see
// README.md.
package spire

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

// The SPIRE server's SQLite datastore needs cgo, which the tools build
// leaves out: SPIRE stores in a real PostgreSQL (internal/pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	sigilTD = "sigil.test"
	spireTD = "spire.test"

	uidSigil = 64301 // sigil.test/w/fed, federates with spire.test
	uidSpire = 64302 // spire.test/w/fed, federates with sigil.test
	uidNoFed = 64303 // spire.test/w/nofed, federates with nothing

	idSigil = "spiffe://sigil.test/w/fed"
	idSpire = "spiffe://spire.test/w/fed"
	idNoFed = "spiffe://spire.test/w/nofed"
)

// bins is what every case runs.
type bins struct {
	sigil                   *e2e.Binary
	mtlspeer, setpriv       string
	spireServer, spireAgent string
	dsn                     func(testing.TB) string
}

func TestFederationWithSPIRE(t *testing.T) {
	b := bins{setpriv: e2e.Setpriv(t), spireServer: e2e.SPIRETool(t, "spire-server"), spireAgent: e2e.SPIRETool(t, "spire-agent"), dsn: pgtest.Start}
	dir, err := os.MkdirTemp("", "sigil-e2e-spire-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // workload uids execute mtlspeer from here
		t.Fatal(err)
	}
	if b.sigil, err = e2e.Build(dir); err != nil {
		t.Fatal(err)
	}
	// The agent suite's go-spiffe spiffetls peer.
	if b.mtlspeer, err = e2e.BuildPackage(dir, "./hack/e2e/agent/mtlspeer", "mtlspeer"); err != nil {
		t.Fatal(err)
	}
	// Each side fetches the other's bundle over each profile once: a bundle
	// endpoint serves one profile, so there are two set-ups.
	t.Run("sigil serves https_spiffe, spire serves https_web", func(t *testing.T) { run(t, b, "https_spiffe") })
	t.Run("sigil serves https_web, spire serves https_spiffe", func(t *testing.T) { run(t, b, "https_web") })
}

// run sets up a Sigil CA and agent and a SPIRE server and agent, with
// Sigil's bundle endpoint serving sigilProfile and SPIRE's the other one,
// federates them and runs the workloads.
func run(t *testing.T, b bins, sigilProfile string) {
	root, err := os.MkdirTemp("", "sigil-e2e-spire-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	for _, d := range []string{root, filepath.Join(root, "sock")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	webRoot, webCert, webKey := e2e.WebPKI(t, root)
	sigilBundleAddr, spireBundleAddr := e2e.FreeAddr(t), e2e.FreeAddr(t)
	sigilWeb := sigilProfile == "https_web"

	// 1. Sigil's CA: its bundle endpoint, and (when SPIRE serves https_web)
	// its relationship with spire.test in ca.yaml, trusting the Web PKI root.
	s := &sigilSide{b: b, dir: filepath.Join(root, "sigil"), sock: filepath.Join(root, "sock", "sigil.sock"), caAddr: e2e.FreeAddr(t)}
	s.adminSock = filepath.Join(s.dir, "ca", "admin.sock")
	endpoint := "    profile: https_spiffe"
	rels := " []"
	if sigilWeb {
		endpoint = fmt.Sprintf("    profile: https_web\n    cert_file: %s\n    key_file: %s", webCert, webKey)
	} else {
		rels = fmt.Sprintf(`
    - trust_domain: %s
      bundle_endpoint_url: https://%s
      profile: https_web
      web_roots_file: %s`, spireTD, spireBundleAddr, webRoot)
	}
	s.startCA(t, sigilBundleAddr, endpoint, rels)
	sigilJSON := filepath.Join(root, "sigil.test.json")
	e2e.WriteFile(t, sigilJSON, b.sigil.MustRun(t, s.admin("bundle", "show", "-o", "spiffe")...), 0o644)

	// 2. SPIRE's server: its bundle endpoint serves the other profile;
	// with Sigil on https_web, its relationship with sigil.test is in the
	// server config (https_web: SPIRE trusts the system roots, here the Web
	// PKI root through SSL_CERT_FILE).
	p := &spireSide{b: b, dir: filepath.Join(root, "spire"), sock: filepath.Join(root, "sock", "spire.sock")}
	p.serverSock = filepath.Join(p.dir, "server.sock")
	spireEndpoint := `profile "https_spiffe" {}`
	federatesWith := ""
	if sigilWeb {
		federatesWith = fmt.Sprintf(`
        federates_with %q {
            bundle_endpoint_url = "https://%s"
            bundle_endpoint_profile "https_web" {}
        }`, sigilTD, sigilBundleAddr)
	} else {
		// file_sync_interval is documented to default to 1h, but SPIRE
		// v1.14.5 refuses the config without it ("invalid duration").
		spireEndpoint = fmt.Sprintf(`profile "https_web" {
                serving_cert_file {
                    cert_file_path = %q
                    key_file_path = %q
                    file_sync_interval = "1h"
                }
            }`, webCert, webKey)
	}
	p.startServer(t, spireBundleAddr, spireEndpoint, federatesWith, webRoot)

	// 3. The relationships made with the CLIs, each with the other side's
	// bundle as the initial one (https_spiffe authenticates the endpoint
	// with it).
	if sigilWeb {
		spireJSON := filepath.Join(root, "spire.test.json")
		e2e.WriteFile(t, spireJSON, p.server(t, "bundle", "show", "-format", "spiffe"), 0o644)
		b.sigil.MustRun(t, s.admin("federation", "create", "--trust-domain", spireTD, "--bundle-endpoint-url", "https://"+spireBundleAddr,
			"--endpoint-spiffe-id", "spiffe://"+spireTD+"/spire/server", "--bundle", spireJSON)...)
	} else {
		p.server(t, "federation", "create", "-trustDomain", sigilTD, "-bundleEndpointURL", "https://"+sigilBundleAddr,
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://"+sigilTD+"/sigil/ca",
			"-trustDomainBundlePath", sigilJSON, "-trustDomainBundleFormat", "spiffe")
	}

	// 4. Each side has fetched the other's bundle from its endpoint: Sigil's
	// federation show reports a success, SPIRE's federation refresh
	// succeeds; each holds exactly the other's roots.
	s.waitFetched(t, spireTD)
	p.waitRefreshed(t, sigilTD)
	if got, want := s.roots(t, spireTD), p.roots(t, spireTD); !sameCerts(got, want) || len(want) == 0 {
		t.Fatalf("sigil holds %d roots for spire.test, spire has %d of its own, and they differ", len(got), len(want))
	}
	if got, want := p.roots(t, sigilTD), s.roots(t, sigilTD); !sameCerts(got, want) || len(want) == 0 {
		t.Fatalf("spire holds %d roots for sigil.test, sigil has %d of its own, and they differ", len(got), len(want))
	}

	// 5. Agents and entries.
	s.startAgent(t)
	p.startAgent(t)
	b.sigil.MustRun(t, s.admin("entry", "create", "--spiffe-id", idSigil, "--parent-id", s.agentID,
		"--selector", fmt.Sprintf("unix:uid:%d", uidSigil), "--federates-with", spireTD)...)
	p.server(t, "entry", "create", "-spiffeID", idSpire, "-parentID", p.agentID,
		"-selector", fmt.Sprintf("unix:uid:%d", uidSpire), "-federatesWith", "spiffe://"+sigilTD)
	p.server(t, "entry", "create", "-spiffeID", idNoFed, "-parentID", p.agentID,
		"-selector", fmt.Sprintf("unix:uid:%d", uidNoFed))

	sigilPeer := e2e.AsUID(b.setpriv, b.mtlspeer, uidSigil)
	spirePeer := e2e.AsUID(b.setpriv, b.mtlspeer, uidSpire)
	noFed := e2e.AsUID(b.setpriv, b.mtlspeer, uidNoFed)

	// 6. mTLS both ways.
	for _, c := range []struct {
		name               string
		server, client     *e2e.Binary
		serverSock, cliSck string
		serverID, clientID string
	}{
		{"sigil serves, spire dials", sigilPeer, spirePeer, s.sock, p.sock, idSigil, idSpire},
		{"spire serves, sigil dials", spirePeer, sigilPeer, p.sock, s.sock, idSpire, idSigil},
	} {
		addr := e2e.FreeAddr(t)
		srv := c.server.Start(t, "-socket", c.serverSock, "-listen", addr, "-peer", c.clientID)
		srv.WaitForOutput(t, "listening", 60*time.Second)
		// The peer's bundle reaches a workload a few seconds after its
		// entry (SPIRE's agent syncs every 5 s): retry for a while.
		out, errOut, err := retry(t, 30*time.Second, func() (string, string, error) {
			return c.client.Run(t, "-socket", c.cliSck, "-dial", addr, "-peer", c.serverID)
		})
		if err != nil || strings.TrimSpace(out) != "reply to hello" {
			t.Fatalf("%s: %v\n%s%s\nserver:\n%s", c.name, err, out, errOut, srv.Output())
		}
		t.Logf("%s: %s", c.name, strings.TrimSpace(out))
		srv.Kill(t)
	}

	// 7. A workload outside the federation is refused. It has its SPIRE
	// SVID first, so the refusals are about trust, not a missing identity.
	if out, errOut, err := retry(t, 30*time.Second, func() (string, string, error) {
		return noFed.Run(t, "-socket", p.sock, "-print-id")
	}); err != nil || strings.TrimSpace(out) != idNoFed {
		t.Fatalf("nofed's SVID: %v\n%s%s", err, out, errOut)
	}
	addr := e2e.FreeAddr(t)
	srv := sigilPeer.Start(t, "-socket", s.sock, "-listen", addr, "-peer", idNoFed) // would accept nofed's ID
	srv.WaitForOutput(t, "listening", 30*time.Second)
	out, errOut, err := noFed.Run(t, "-socket", p.sock, "-dial", addr, "-peer", idSigil)
	if err == nil || !strings.Contains(errOut, `trust domain "sigil.test"`) {
		t.Fatalf("nofed dialing sigil's workload: err %v, want sigil.test untrusted\n%s%s", err, out, errOut)
	}
	srv.Kill(t)
	addr = e2e.FreeAddr(t)
	srv = noFed.Start(t, "-socket", p.sock, "-listen", addr, "-peer", idSigil)
	srv.WaitForOutput(t, "listening", 30*time.Second)
	out, errOut, err = sigilPeer.Run(t, "-socket", s.sock, "-dial", addr, "-peer", idNoFed)
	if err == nil || !strings.Contains(errOut, "tls:") {
		t.Fatalf("sigil's workload dialing nofed: err %v, want a TLS alert from nofed\n%s%s", err, out, errOut)
	}
	srv.Kill(t)
}

// retry calls f until it succeeds or for d, and returns its last result.
func retry(t *testing.T, d time.Duration, f func() (string, string, error)) (string, string, error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, errOut, err := f()
		if err == nil || time.Now().After(deadline) {
			return out, errOut, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// sigilSide is a Sigil CA and agent of sigil.test.
type sigilSide struct {
	b                    bins
	dir, adminSock, sock string
	caAddr, agentID      string
}

func (s *sigilSide) admin(args ...string) []string {
	return append(args, "--admin-socket", s.adminSock)
}

func (s *sigilSide) startCA(t *testing.T, bundleAddr, endpoint, relationships string) {
	t.Helper()
	cfg := filepath.Join(s.dir, "ca.yaml")
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	e2e.WriteFile(t, cfg, fmt.Sprintf(`trust_domain: %s
data_dir: %s
server_address: %s
federation:
  min_refresh: 1s
  max_refresh: 10s
  bundle_endpoint:
    address: %s
%s
  relationships:%s
`, sigilTD, filepath.Join(s.dir, "ca"), s.caAddr, bundleAddr, endpoint, relationships), 0o600)
	p := s.b.sigil.Start(t, "ca", "run", "--config", cfg)
	e2e.WaitForSocket(t, p, s.adminSock, 30*time.Second)
}

func (s *sigilSide) startAgent(t *testing.T) {
	t.Helper()
	tok := strings.TrimSpace(s.b.sigil.MustRun(t, s.admin("token", "create")...))
	s.agentID = "spiffe://" + sigilTD + "/sigil/agent/join_token/" + tok
	bundle := filepath.Join(s.dir, "bundle.pem")
	e2e.WriteFile(t, bundle, s.b.sigil.MustRun(t, s.admin("bundle", "show", "-o", "pem")...), 0o644)
	cfg := filepath.Join(s.dir, "agent.yaml")
	e2e.WriteFile(t, cfg, fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: %s
socket_path: %s
trust_bundle_file: %s
join_token: %s
`, sigilTD, s.caAddr, filepath.Join(s.dir, "agent"), s.sock, bundle, tok), 0o600)
	p := s.b.sigil.Start(t, "agent", "run", "--config", cfg)
	e2e.WaitForSocket(t, p, s.sock, 30*time.Second)
}

// roots is the X.509 authorities Sigil's CA holds for td.
func (s *sigilSide) roots(t *testing.T, td string) []*x509.Certificate {
	t.Helper()
	return parsePEM(t, s.b.sigil.MustRun(t, s.admin("bundle", "show", "-o", "pem", "--trust-domain", td)...))
}

// waitFetched waits until Sigil's CA has fetched td's bundle from its
// endpoint and the latest fetch succeeded.
func (s *sigilSide) waitFetched(t *testing.T, td string) {
	t.Helper()
	success := regexp.MustCompile(`(?m)^Last success:\s+\d{4}-`)
	noFailures := regexp.MustCompile(`(?m)^Consecutive failures:\s+0$`)
	out, errOut, err := retry(t, 60*time.Second, func() (string, string, error) {
		out, errOut, err := s.b.sigil.Run(t, s.admin("federation", "show", "--trust-domain", td)...)
		if err == nil && !(success.MatchString(out) && noFailures.MatchString(out)) {
			err = fmt.Errorf("not fetched yet")
		}
		return out, errOut, err
	})
	if err != nil {
		t.Fatalf("sigil did not fetch %s's bundle within 60s: %v\n%s%s", td, err, out, errOut)
	}
}

// spireSide is a SPIRE server and agent of spire.test.
type spireSide struct {
	b                     bins
	dir, sock, serverSock string
	serverAddr, agentID   string
	serverProc            *e2e.Proc
}

// server runs spire-server CMD with the server's socket and fails the test
// on error.
func (p *spireSide) server(t *testing.T, cmd string, args ...string) string {
	t.Helper()
	out, errOut, err := p.serverRun(t, cmd, args...)
	if err != nil {
		t.Fatalf("spire-server %s %s: %v\n%s%s", cmd, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (p *spireSide) serverRun(t *testing.T, cmd string, args ...string) (string, string, error) {
	t.Helper()
	// "bundle show" is two words; the socket flag goes after them.
	words := strings.Fields(cmd)
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		words, args = append(words, args[0]), args[1:]
	}
	bin := &e2e.Binary{Path: p.b.spireServer}
	return bin.Run(t, append(append(words, "-socketPath", p.serverSock), args...)...)
}

func (p *spireSide) startServer(t *testing.T, bundleAddr, endpointProfile, federatesWith, webRoot string) {
	t.Helper()
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e2e.FreeAddr(t))
	bhost, bport, _ := net.SplitHostPort(bundleAddr)
	p.serverAddr = net.JoinHostPort(host, port)
	cfg := filepath.Join(p.dir, "server.conf")
	e2e.WriteFile(t, cfg, fmt.Sprintf(`server {
    bind_address = %q
    bind_port = %q
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "INFO"
    federation {
        bundle_endpoint {
            address = %q
            port = %s
            refresh_hint = "1m" # SPIRE's minimum
            %s
        }%s
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "postgres"
            connection_string = %q
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`, host, port, p.serverSock, spireTD, filepath.Join(p.dir, "data"), bhost, bport, endpointProfile, federatesWith, p.b.dsn(t)), 0o600)
	bin := &e2e.Binary{Path: p.b.spireServer, Env: []string{"SSL_CERT_FILE=" + webRoot}}
	p.serverProc = bin.Start(t, "run", "-config", cfg)
	e2e.WaitForSocket(t, p.serverProc, p.serverSock, 60*time.Second)
	if out, errOut, err := retry(t, 60*time.Second, func() (string, string, error) { return p.serverRun(t, "healthcheck") }); err != nil {
		t.Fatalf("spire-server healthcheck: %v\n%s%s\n%s", err, out, errOut, p.serverProc.Output())
	}
}

func (p *spireSide) startAgent(t *testing.T) {
	t.Helper()
	out := p.server(t, "token", "generate")
	// "Token: T", then a warning that the token names no SPIFFE ID.
	m := regexp.MustCompile(`(?m)^Token: (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("spire-server token generate printed %q", out)
	}
	tok := m[1]
	p.agentID = "spiffe://" + spireTD + "/spire/agent/join_token/" + tok
	bundle := filepath.Join(p.dir, "bootstrap.pem")
	e2e.WriteFile(t, bundle, p.server(t, "bundle", "show"), 0o644)
	host, port, _ := net.SplitHostPort(p.serverAddr)
	cfg := filepath.Join(p.dir, "agent.conf")
	e2e.WriteFile(t, cfg, fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "INFO"
    server_address = %q
    server_port = %q
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
    join_token = %q
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, filepath.Join(p.dir, "agent"), host, port, p.sock, bundle, spireTD, tok), 0o600)
	bin := &e2e.Binary{Path: p.b.spireAgent}
	proc := bin.Start(t, "run", "-config", cfg)
	e2e.WaitForSocket(t, proc, p.sock, 60*time.Second)
}

// roots is the X.509 authorities the SPIRE server holds for td: its own
// bundle or a federated one.
func (p *spireSide) roots(t *testing.T, td string) []*x509.Certificate {
	t.Helper()
	if td == spireTD {
		return parsePEM(t, p.server(t, "bundle", "show"))
	}
	return parsePEM(t, p.server(t, "bundle", "list", "-id", "spiffe://"+td))
}

// waitRefreshed has the SPIRE server fetch td's bundle from its endpoint
// now (spire-server federation refresh fails if the fetch does) until it
// succeeds.
func (p *spireSide) waitRefreshed(t *testing.T, td string) {
	t.Helper()
	out, errOut, err := retry(t, 60*time.Second, func() (string, string, error) {
		return p.serverRun(t, "federation", "refresh", "-id", td)
	})
	if err != nil {
		t.Fatalf("spire-server federation refresh -id %s: %v\n%s%s\n%s", td, err, out, errOut, p.serverProc.Output())
	}
}

// parsePEM reads every CERTIFICATE block in out, skipping any other text.
func parsePEM(t *testing.T, out string) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	rest := []byte(out)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return certs
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("parse certificate: %v\n%s", err, out)
		}
		certs = append(certs, c)
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	key := func(c *x509.Certificate) string { return string(c.Raw) }
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i, c := range a {
		ka[i] = key(c)
	}
	for i, c := range b {
		kb[i] = key(c)
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}
