// Package sds is the end-to-end suite for Envoy SDS on the agent's socket:
// the Envoy-like client of internal/envoytest against real `sigil ca run`
// and `sigil agent run` processes; see README.md.
package sds

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/pemfile"
)

const (
	td      = "e2e.test"
	idEnvoy = "spiffe://" + td + "/w/envoy" // this test process's entry
	idLater = "spiffe://" + td + "/w/later" // an entry created only at step 5
)

var sigil *e2e.Binary

func TestMain(m *testing.M) {
	e2e.Main(m, "sds", func(b *e2e.Binary, _ string) error { sigil = b; return nil })
}

// stack is a CA and an agent in t.TempDir(); the Envoy is this process.
type stack struct {
	adminSock, agentSock, agentID string
}

func (s *stack) admin(args ...string) []string { return append(args, "--admin-socket", s.adminSock) }

func startStack(t *testing.T) *stack {
	t.Helper()
	dir := t.TempDir()
	s := &stack{adminSock: filepath.Join(dir, "ca", "admin.sock"), agentSock: filepath.Join(dir, "agent.sock")}
	addr := e2e.FreeAddr(t)
	e2e.WriteFile(t, filepath.Join(dir, "ca.yaml"), fmt.Sprintf("trust_domain: %s\ndata_dir: %s\nserver_address: %s\n", td, filepath.Join(dir, "ca"), addr), 0o600)
	ca := sigil.Start(t, "ca", "run", "--config", filepath.Join(dir, "ca.yaml"))
	e2e.WaitForSocket(t, ca, s.adminSock, 30*time.Second)

	tok := strings.TrimSpace(sigil.MustRun(t, s.admin("token", "create")...))
	s.agentID = "spiffe://" + td + "/sigil/agent/join_token/" + tok
	s.createEntry(t, idEnvoy)
	e2e.WriteFile(t, filepath.Join(dir, "bundle.pem"), sigil.MustRun(t, s.admin("bundle", "show", "--format", "pem")...), 0o600)
	e2e.WriteFile(t, filepath.Join(dir, "agent.yaml"), fmt.Sprintf("trust_domain: %s\nserver_address: %s\ndata_dir: agent\nsocket_path: %s\ntrust_bundle_file: bundle.pem\njoin_token: %s\n",
		td, addr, s.agentSock, tok), 0o600)
	agent := sigil.Start(t, "agent", "run", "--config", filepath.Join(dir, "agent.yaml"))
	e2e.WaitForSocket(t, agent, s.agentSock, 30*time.Second)
	return s
}

func (s *stack) createEntry(t *testing.T, id string) {
	t.Helper()
	sigil.MustRun(t, s.admin("entry", "create", "--spiffe-id", id, "--parent-id", s.agentID, "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))...)
}

// activeX509Key is the ID of the CA's active X.509 signing key.
func (s *stack) activeX509Key(t *testing.T) string {
	t.Helper()
	out := sigil.MustRun(t, s.admin("ca", "status", "-o", "json")...)
	var st struct {
		Keys []struct{ ID, Kind, State string } `json:"keys"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ca status -o json: %v\n%s", err, out)
	}
	for _, k := range st.Keys {
		if k.Kind == "x509" && k.State == "active" {
			return k.ID
		}
	}
	t.Fatalf("no active x509 key in:\n%s", out)
	return ""
}

// workloadSVID is what go-spiffe gets for this process on the same socket.
func (s *stack) workloadSVID(t *testing.T) *x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+s.agentSock))
	if err != nil {
		t.Fatalf("go-spiffe FetchX509SVID: %v", err)
	}
	return svid
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// chainOf parses the default secret's certificate chain.
func chainOf(t *testing.T, sec *tlsv3.Secret) []*x509.Certificate {
	t.Helper()
	certs, err := pemfile.ParseCerts(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: %v", sec.GetName(), err)
	}
	return certs
}

// keyID is how `sigil ca status` names the key of a CA certificate.
func keyID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// checkDefault asserts that def is want's certificate (the key pair itself
// was checked by envoytest.DecodeSecret) and verifies against rootCA.
func checkDefault(t *testing.T, what string, def, rootCA *tlsv3.Secret, want *x509svid.SVID) {
	t.Helper()
	if def == nil || rootCA == nil {
		t.Fatalf("%s: default=%v ROOTCA=%v", what, def != nil, rootCA != nil)
	}
	chain := chainOf(t, def)
	if !chain[0].Equal(want.Certificates[0]) {
		t.Fatalf("%s: default is serial %s, the workload's current SVID is %s", what, chain[0].SerialNumber, want.Certificates[0].SerialNumber)
	}
	roots, err := pemfile.ParseCerts(rootCA.GetValidationContext().GetTrustedCa().GetInlineBytes())
	if err != nil {
		t.Fatalf("%s: ROOTCA: %v", what, err)
	}
	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("%s: default does not verify against ROOTCA: %v", what, err)
	}
}

// signedBy reports whether def's leaf is signed by the CA key kid. It is
// called from the stream goroutines, so it does not fail the test itself.
func signedBy(def *tlsv3.Secret, kid string) bool {
	if def == nil {
		return false
	}
	chain, err := pemfile.ParseCerts(def.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	return err == nil && len(chain) > 1 && keyID(chain[1]) == kid && chain[0].CheckSignatureFrom(chain[1]) == nil
}

// stream is one open stream as the rotation step sees it.
type stream struct {
	name   string
	next   func(context.Context) error // receive one response and ACK it
	secret func(string) *tlsv3.Secret
}

func TestSDSEndToEnd(t *testing.T) {
	start := time.Now()
	s := startStack(t)
	client, err := envoytest.Dial(s.agentSock, envoytest.Node("sidecar~127.0.0.1~e2e-envoy~e2e.svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// A second connection, as a second Envoy on the node (same uid) would have.
	client2, err := envoytest.Dial(s.agentSock, envoytest.Node("sidecar~127.0.0.1~e2e-envoy-2~e2e.svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client2.Close() })
	svid := s.workloadSVID(t)
	if svid.ID.String() != idEnvoy {
		t.Fatalf("this process got %s, want %s", svid.ID, idEnvoy)
	}
	t.Logf("CA and agent up, SVID served, in %s", time.Since(start).Round(time.Millisecond))

	// 1. default is the workload's current SVID and verifies against ROOTCA,
	// on SotW, Delta and Fetch.
	var streams []stream
	for i := range 3 {
		client := client
		if i == 2 {
			client = client2
		}
		sotw, err := client.StreamSecrets(timeout(t, time.Minute), "default", "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sotw.Close)
		delta, err := client.DeltaSecrets(timeout(t, time.Minute), "default", "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(delta.Close)
		streams = append(streams,
			stream{fmt.Sprintf("sotw-%d", i), func(ctx context.Context) error { _, err := sotw.Next(ctx); return err }, sotw.Secret},
			stream{fmt.Sprintf("delta-%d", i), func(ctx context.Context) error { _, err := delta.Next(ctx); return err }, delta.Secret})
	}
	for _, st := range streams {
		for st.secret("default") == nil || st.secret("ROOTCA") == nil {
			if err := st.next(timeout(t, 10*time.Second)); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		checkDefault(t, st.name, st.secret("default"), st.secret("ROOTCA"), svid)
	}
	resp, err := client.Fetch(timeout(t, 10*time.Second), "default", "ROOTCA")
	if err != nil {
		t.Fatalf("FetchSecrets: %v", err)
	}
	fetched := map[string]*tlsv3.Secret{}
	for _, a := range resp.GetResources() {
		sec, err := envoytest.DecodeSecret(a)
		if err != nil {
			t.Fatalf("FetchSecrets: %v", err)
		}
		fetched[sec.GetName()] = sec
	}
	checkDefault(t, "fetch", fetched["default"], fetched["ROOTCA"], svid)

	// 2. Changing names: a SotW stream adds the trust domain bundle, a Delta
	// stream subscribes to its own SPIFFE ID and drops ROOTCA.
	sotw0, err := client.StreamSecrets(timeout(t, time.Minute), "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sotw0.Close)
	for sotw0.Secret("default") == nil {
		if _, err := sotw0.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sotw0.SetNames("default", "spiffe://"+td); err != nil {
		t.Fatal(err)
	}
	for sotw0.Secret("spiffe://"+td) == nil {
		if _, err := sotw0.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatalf("after adding spiffe://%s: %v", td, err)
		}
	}
	streams = append(streams, stream{"sotw-renamed", func(ctx context.Context) error { _, err := sotw0.Next(ctx); return err }, sotw0.Secret})
	delta0, err := client.DeltaSecrets(timeout(t, time.Minute), "default", "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(delta0.Close)
	for delta0.Secret("default") == nil || delta0.Secret("ROOTCA") == nil {
		if _, err := delta0.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := delta0.Unsubscribe("ROOTCA"); err != nil {
		t.Fatal(err)
	}
	if err := delta0.Subscribe(idEnvoy); err != nil {
		t.Fatal(err)
	}
	for delta0.Secret(idEnvoy) == nil {
		if _, err := delta0.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatalf("after subscribing to %s: %v", idEnvoy, err)
		}
	}
	if !chainOf(t, delta0.Secret(idEnvoy))[0].Equal(svid.Certificates[0]) {
		t.Fatalf("secret %s is not the workload's SVID", idEnvoy)
	}
	streams = append(streams, stream{"delta-renamed", func(ctx context.Context) error { _, err := delta0.Next(ctx); return err }, delta0.Secret})

	// 3. Names that cannot be served stay pending without failing the
	// stream: an ID with no entry yet, and a name that is nothing at all.
	// This stream also NACKs the rotation at step 4.
	pending, err := client.StreamSecrets(timeout(t, time.Minute), "default", idLater, "no-such-secret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pending.Close)
	for pending.Secret("default") == nil {
		if _, err := pending.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if pending.Secret(idLater) != nil || pending.Secret("no-such-secret") != nil {
		t.Fatal("a name that cannot be served was answered")
	}

	// 4. Forced rotation: prepare, activate, taint the old key. Every open
	// stream gets the new SVID, signed by the new key; the pending stream
	// NACKs it.
	oldKey := s.activeX509Key(t)
	sigil.MustRun(t, s.admin("ca", "prepare")...)
	sigil.MustRun(t, s.admin("ca", "activate")...)
	newKey := s.activeX509Key(t)
	if newKey == oldKey {
		t.Fatalf("ca activate left %s active", oldKey)
	}
	type got struct {
		name string
		at   time.Time
		err  error
	}
	results := make(chan got, len(streams)+1)
	var wg sync.WaitGroup
	for _, st := range streams {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for !signedBy(st.secret("default"), newKey) {
				if err := st.next(ctx); err != nil {
					results <- got{st.name, time.Now(), err}
					return
				}
			}
			results <- got{st.name, time.Now(), nil}
		})
	}
	var rejected *discoveryv3.DiscoveryResponse
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			resp, err := pending.Recv(ctx)
			if err != nil {
				results <- got{"pending (NACK)", time.Now(), err}
				return
			}
			if rotatedIn(resp, newKey) {
				rejected = resp
				results <- got{"pending (NACK)", time.Now(), pending.NACK(resp, "e2e rejects the rotated certificate")}
				return
			}
			if err := pending.ACK(resp); err != nil {
				results <- got{"pending (NACK)", time.Now(), err}
				return
			}
		}
	})
	tainted := time.Now()
	sigil.MustRun(t, s.admin("ca", "taint", oldKey)...)
	wg.Wait()
	close(results)
	var last time.Duration
	var lat []string
	for r := range results {
		if r.err != nil {
			t.Fatalf("%s: no SVID signed by the new key %s: %v", r.name, newKey, r.err)
		}
		d := r.at.Sub(tainted)
		last = max(last, d)
		lat = append(lat, fmt.Sprintf("%s %s", r.name, d.Round(time.Millisecond)))
	}
	t.Logf("`sigil ca taint` → last of %d streams holding the new SVID: %s (%s)", len(streams)+1, last.Round(time.Millisecond), strings.Join(lat, ", "))
	rotated := s.workloadSVID(t)
	if rotated.Certificates[0].Equal(svid.Certificates[0]) {
		t.Fatal("go-spiffe still gets the old SVID after the taint")
	}
	// The bundle's authorities are the CA keys, so ROOTCA changed with the
	// prepared key: the renamed streams, which do not hold ROOTCA, are
	// checked against a stream's current one.
	var rootNow *tlsv3.Secret
	for _, st := range streams {
		if r := st.secret("ROOTCA"); r != nil {
			rootNow = r
		}
	}
	for _, st := range streams {
		root := st.secret("ROOTCA")
		if root == nil {
			root = rootNow
		}
		checkDefault(t, st.name+" after the rotation", st.secret("default"), root, rotated)
	}

	// 5. The NACKed version is not sent again: the next response on that
	// stream comes from a real change (the pending ID gets its entry),
	// carries another version, and delivers the pending name.
	quiet, cancel := context.WithTimeout(context.Background(), time.Second)
	if resp, err := pending.Recv(quiet); err == nil {
		if resp.GetVersionInfo() == rejected.GetVersionInfo() {
			t.Fatalf("the NACKed version %s was sent again", rejected.GetVersionInfo())
		}
		if err := pending.ACK(resp); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	created := time.Now()
	s.createEntry(t, idLater)
	for pending.Secret(idLater) == nil {
		resp, err := pending.Next(timeout(t, 10*time.Second))
		if err != nil {
			t.Fatalf("pending stream after the NACK: %v", err)
		}
		if resp.GetVersionInfo() == rejected.GetVersionInfo() {
			t.Fatalf("the NACKed version %s was sent again", rejected.GetVersionInfo())
		}
	}
	t.Logf("`sigil entry create` → pending name served: %s", time.Since(created).Round(time.Millisecond))
	if !signedBy(pending.Secret("default"), newKey) || chainOf(t, pending.Secret(idLater))[0].URIs[0].String() != idLater {
		t.Fatal("the response after the NACK lacks the current default or the pending ID")
	}
	if pending.Secret("no-such-secret") != nil {
		t.Fatal("no-such-secret was answered")
	}
	// With two identities, default is whichever the Workload API hands out
	// first (the smaller entry ID); SDS and go-spiffe must agree.
	current := s.workloadSVID(t)
	if !chainOf(t, pending.Secret("default"))[0].Equal(current.Certificates[0]) {
		t.Fatalf("with two identities SDS default is %s, go-spiffe's default is %s", chainOf(t, pending.Secret("default"))[0].URIs, current.ID)
	}

	// 6. Reconnect: a SotW stream gets the full state again in the version it
	// holds; a Delta stream that says it holds an older default gets only
	// default.
	re, err := client.StreamSecrets(timeout(t, time.Minute), "default", "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(re.Close)
	first, err := re.Next(timeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := re.Reconnect(timeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	again, err := re.Next(timeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("after reconnect: %v", err)
	}
	if again.GetVersionInfo() != first.GetVersionInfo() || len(again.GetResources()) != 2 {
		t.Fatalf("SotW after reconnect: version %q (held %q), %d resources", again.GetVersionInfo(), first.GetVersionInfo(), len(again.GetResources()))
	}
	checkDefault(t, "sotw after reconnect", re.Secret("default"), re.Secret("ROOTCA"), current)

	dre, err := client.DeltaSecrets(timeout(t, time.Minute), "default", "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dre.Close)
	for dre.Secret("default") == nil || dre.Secret("ROOTCA") == nil {
		if _, err := dre.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	dre.SetVersion("default", "an-older-version")
	if err := dre.Reconnect(timeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	dresp, err := dre.Next(timeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("delta after reconnect: %v", err)
	}
	if len(dresp.GetResources()) != 1 || dresp.GetResources()[0].GetName() != "default" {
		t.Fatalf("delta after reconnect: want only default, got %d resources", len(dresp.GetResources()))
	}
	checkDefault(t, "delta after reconnect", dre.Secret("default"), dre.Secret("ROOTCA"), current)
	t.Logf("suite took %s", time.Since(start).Round(time.Millisecond))
}

// rotatedIn reports whether resp carries a default signed by kid.
func rotatedIn(resp *discoveryv3.DiscoveryResponse, kid string) bool {
	for _, a := range resp.GetResources() {
		sec, err := envoytest.DecodeSecret(a)
		if err != nil {
			return false
		}
		if sec.GetName() == "default" && signedBy(sec, kid) {
			return true
		}
	}
	return false
}
