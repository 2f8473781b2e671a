package upstream_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
)

const stepHowToGet = "step-ca and step v0.30.2 are needed: run hack/setup/61-step-ca.sh " +
	"(builds them into ~/.cache/sigil/tools) and put them on PATH, or set SIGIL_STEP_CA to step-ca's path"

// stepTool finds step-ca or step: $SIGIL_STEP_CA (and step beside it),
// PATH, then the setup script's cache.
func stepTool(t *testing.T, name string) string {
	t.Helper()
	if p := os.Getenv("SIGIL_STEP_CA"); p != "" {
		if name == "step-ca" {
			return p
		}
		if q := filepath.Join(filepath.Dir(p), name); fileExists(q) {
			return q
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if dir, err := os.UserCacheDir(); err == nil {
		if p := filepath.Join(dir, "sigil", "tools", name); fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s not found. %s", name, stepHowToGet)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// stepCA is a real step-ca on a loopback port, with a JWK provisioner
// "sigil" and an X5C provisioner "sigil-x5c" (trusting x5cRoot) whose
// templates issue CA certificates for example.org.
type stepCA struct {
	t           *testing.T
	bin, config string
	pwFile      string
	url         string
	rootFile    string
	fingerprint string
	root        *x509.Certificate
	// x5cRoot is the X5C provisioner's only root: a certificate under it
	// (with digitalSignature) is the credential of the provisioner.
	x5cRoot    *x509.Certificate
	x5cRootKey *ecdsa.PrivateKey

	mu  sync.Mutex
	cmd *exec.Cmd
}

// stepCATemplate is what an operator configures on the provisioner (see
// docs/step-ca.md): a CA certificate limited to the trust domain.
const stepCATemplate = `{
  "subject": {{ toJson .Subject }},
  "sans": {{ toJson .SANs }},
  "keyUsage": ["certSign", "crlSign", "digitalSignature"],
  "basicConstraints": {"isCA": true, "maxPathLen": 0},
  "nameConstraints": {"critical": true, "permittedURIDomains": ["example.org"]}
}`

// x5cProvisioner names step-ca's X5C provisioner.
const x5cProvisioner = "sigil-x5c"

func startStepCA(t *testing.T) *stepCA {
	t.Helper()
	stepBin, caBin := stepTool(t, "step"), stepTool(t, "step-ca")
	dir := t.TempDir()
	steppath := filepath.Join(dir, "step")
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	init := exec.Command(stepBin, "ca", "init", "--name", "Sigil Test PKI", "--dns", "127.0.0.1", "--address", addr,
		"--provisioner", "sigil", "--password-file", pw, "--provisioner-password-file", pw, "--deployment-type", "standalone")
	init.Env = append(os.Environ(), "STEPPATH="+steppath, "HOME="+dir)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("step ca init: %v\n%s", err, out)
	}

	// step ca init makes an intermediate with path length 0, which cannot
	// sign Sigil's CA certificates: replace root and intermediate with a
	// pair whose intermediate may sign one more CA, as a PKI feeding Sigil
	// must have.
	root, rootKey := newCA(t, "Test Root", nil, nil, -1)
	inter, interKey := newCA(t, "Test Intermediate", root, rootKey, 1)
	writePEM(t, filepath.Join(steppath, "certs", "root_ca.crt"), "CERTIFICATE", root.Raw)
	writePEM(t, filepath.Join(steppath, "certs", "intermediate_ca.crt"), "CERTIFICATE", inter.Raw)
	der, err := x509.MarshalECPrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(steppath, "secrets", "intermediate_ca_key"), "EC PRIVATE KEY", der)

	cfgPath := filepath.Join(steppath, "config", "ca.json")

	// An X5C provisioner, added the way an operator would, trusting a root
	// of its own (not step-ca's): certificates under it authorize signing.
	x5cRoot, x5cRootKey := newCA(t, "Test X5C Root", nil, nil, -1)
	x5cRootFile := filepath.Join(dir, "x5c_root.crt")
	writePEM(t, x5cRootFile, "CERTIFICATE", x5cRoot.Raw)
	tmplFile := filepath.Join(dir, "sigil-ca.tpl")
	if err := os.WriteFile(tmplFile, []byte(stepCATemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	add := exec.Command(stepBin, "ca", "provisioner", "add", x5cProvisioner, "--type", "X5C",
		"--x5c-roots", x5cRootFile, "--x509-template", tmplFile, "--ca-config", cfgPath)
	add.Env = init.Env
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("step ca provisioner add --type X5C: %v\n%s", err, out)
	}

	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	auth := cfg["authority"].(map[string]any)
	for _, p := range auth["provisioners"].([]any) {
		p := p.(map[string]any)
		switch p["name"] {
		case "sigil":
			p["options"] = map[string]any{"x509": map[string]any{"template": stepCATemplate}}
		case x5cProvisioner:
			if p["type"] != "X5C" || p["options"] == nil {
				t.Fatalf("step ca provisioner add wrote %v, want an X5C provisioner with the template", p)
			}
		default:
			continue
		}
		p["claims"] = map[string]any{"minTLSCertDuration": "5s", "maxTLSCertDuration": "48h", "defaultTLSCertDuration": "1h"}
	}
	if raw, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(root.Raw)
	s := &stepCA{t: t, bin: caBin, config: cfgPath, pwFile: pw, url: "https://" + addr,
		rootFile: filepath.Join(steppath, "certs", "root_ca.crt"), fingerprint: hex.EncodeToString(sum[:]), root: root,
		x5cRoot: x5cRoot, x5cRootKey: x5cRootKey}
	s.start()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() { // step-ca tells a client only "unauthorized": the why is in its log
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.config), "step-ca.log"))
			t.Logf("step-ca log:\n%s", log)
		}
	})
	return s
}

// start runs step-ca and waits until it answers /health over TLS.
func (s *stepCA) start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, s.config, "--password-file", s.pwFile)
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(s.config), "step-ca.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start step-ca: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	pool := x509.NewCertPool()
	pool.AddCert(s.root)
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.config), "step-ca.log"))
			s.t.Fatalf("step-ca did not become healthy within 60s: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *stepCA) stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newCA makes a CA certificate: self-signed when parent is nil; pathLen <
// 0 leaves the path length open.
func newCA(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, pathLen int) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if pathLen >= 0 {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = pathLen, pathLen == 0
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, path, typ string, der ...[]byte) {
	t.Helper()
	var out []byte
	for _, d := range der {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// signSVID has the CA sign an X509-SVID for id and checks it with go-spiffe
// and `openssl verify` against step-ca's root alone.
func signSVID(t *testing.T, c *ca.CA, s *stepCA, id string) *ca.X509SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.ParseCSR(der, td)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := c.SignX509SVID(context.Background(), csr, ca.SVIDParams{})
	if err != nil {
		t.Fatalf("sign x509-svid: %v", err)
	}
	got, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{s.root}))
	if err != nil {
		t.Fatalf("go-spiffe: the svid does not verify to step-ca's root: %v", err)
	}
	if got.String() != id {
		t.Fatalf("go-spiffe: id %s, want %s", got, id)
	}
	dir := t.TempDir()
	leaf, chain := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "chain.pem")
	writePEM(t, leaf, "CERTIFICATE", svid.Certificates[0].Raw)
	var rest [][]byte
	for _, c := range svid.Certificates[1:] {
		rest = append(rest, c.Raw)
	}
	writePEM(t, chain, "CERTIFICATE", rest...)
	out, err := exec.Command("openssl", "verify", "-CAfile", s.rootFile, "-untrusted", chain, leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	return svid
}

func TestStepCAUpstreamSignsRotatesAndSurvivesOutage(t *testing.T) {
	ctx := context.Background()
	s := startStepCA(t)
	reg := prometheus.NewRegistry()
	up, err := upstream.NewStepCA(ctx, upstream.StepCAConfig{
		URL: s.url, RootFingerprint: s.fingerprint, Provisioner: "sigil", PasswordFile: s.pwFile, Metrics: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := up.Roots(ctx)
	if err != nil || len(roots) != 1 || !roots[0].Equal(s.root) {
		t.Fatalf("roots %v, %v: want step-ca's root", roots, err)
	}
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sigil.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const caTTL = time.Minute // the CA's minimum: the next key is due after 30s
	c, err := ca.New(ca.Config{TrustDomain: td, Store: st, Keys: keys.NewMemory(), Upstream: up,
		CATTL: caTTL, X509SVIDTTL: 5 * time.Second, JWTSVIDTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatalf("init with step-ca: %v", err)
	}
	first := signSVID(t, c, s, "spiffe://example.org/workload")
	caCert := first.Certificates[1]
	if len(caCert.PermittedURIDomains) != 1 || caCert.PermittedURIDomains[0] != "example.org" {
		t.Fatalf("signing certificate's name constraints %q", caCert.PermittedURIDomains)
	}
	if h := up.Health(); h.ConsecutiveFailures != 0 || h.LastSuccess.IsZero() {
		t.Fatalf("health after a signing: %+v", h)
	}

	// step-ca goes away; the next key is due at half the active key's life.
	s.stop()
	time.Sleep(time.Until(caCert.NotBefore.Add(10*time.Second + caTTL/2 + 500*time.Millisecond)))
	if err := c.Rotate(ctx); err == nil {
		t.Fatal("rotate with step-ca stopped succeeded")
	}
	status, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status.Upstream == nil || status.Upstream.ConsecutiveFailures == 0 || status.Upstream.LastError == "" {
		t.Fatalf("status during the outage: %+v", status.Upstream)
	}
	for _, k := range status.Keys {
		if k.Kind == ca.X509 && k.State == ca.Prepared {
			t.Fatalf("a key was prepared with step-ca down: %+v", k)
		}
	}
	if v := gaugeValue(t, reg, "sigil_upstream_up"); v != 0 {
		t.Fatalf("sigil_upstream_up = %v during the outage", v)
	}
	during := signSVID(t, c, s, "spiffe://example.org/during-outage")
	if !during.Certificates[1].Equal(caCert) {
		t.Fatal("signing during the outage used another CA certificate")
	}

	// step-ca is back: the rotation resumes.
	s.start()
	if err := c.Rotate(ctx); err != nil {
		t.Fatalf("rotate after step-ca returned: %v", err)
	}
	if h := up.Health(); h.ConsecutiveFailures != 0 {
		t.Fatalf("health after step-ca returned: %+v", h)
	}
	if v := gaugeValue(t, reg, "sigil_upstream_up"); v != 1 {
		t.Fatalf("sigil_upstream_up = %v after step-ca returned", v)
	}
	next, err := c.Activate(ctx, ca.X509)
	if err != nil {
		t.Fatalf("activate the key step-ca signed after the outage: %v", err)
	}
	after := signSVID(t, c, s, "spiffe://example.org/after-outage")
	if after.Certificates[1].Equal(caCert) || after.CAKeyID != next.ID {
		t.Fatalf("after rotation the SVID is signed by key %s, want %s", after.CAKeyID, next.ID)
	}
}

// gaugeValue reads a registered gauge.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestStepCAUpstreamRefusesBadConfigAndAnswers(t *testing.T) {
	ctx := context.Background()
	s := startStepCA(t)
	tests := []struct {
		name    string
		cfg     upstream.StepCAConfig
		wantErr string
	}{
		{"wrong fingerprint", upstream.StepCAConfig{URL: s.url, RootFingerprint: strings.Repeat("ab", 32), Provisioner: "sigil", PasswordFile: s.pwFile}, "fetch root"},
		{"not https", upstream.StepCAConfig{URL: "http://127.0.0.1:1", RootFile: s.rootFile, Provisioner: "sigil", PasswordFile: s.pwFile}, "want https"},
		{"no credentials", upstream.StepCAConfig{URL: s.url, RootFile: s.rootFile, Provisioner: "sigil"}, "password file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upstream.NewStepCA(ctx, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}

	signer, err := keys.NewMemory().GenerateKey(ctx, "k", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "Sigil CA example.org"}, URIs: []*url.URL{td.ID().URL()},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign,
		PermittedURIDomains: []string{"example.org"}}
	t.Run("wrong password", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(bad, []byte("nope\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		up, err := upstream.NewStepCA(ctx, upstream.StepCAConfig{URL: s.url, RootFile: s.rootFile, Provisioner: "sigil", PasswordFile: bad})
		if err != nil {
			t.Fatal(err)
		}
		_, err = up.SignCAWithSigner(ctx, tmpl, signer)
		if err == nil || !strings.Contains(err.Error(), "wrong password") {
			t.Fatalf("err = %v, want a wrong password", err)
		}
	})
	t.Run("unknown provisioner", func(t *testing.T) {
		up, err := upstream.NewStepCA(ctx, upstream.StepCAConfig{URL: s.url, RootFile: s.rootFile, Provisioner: "nobody", PasswordFile: s.pwFile})
		if err != nil {
			t.Fatal(err)
		}
		_, err = up.SignCAWithSigner(ctx, tmpl, signer)
		if err == nil || !strings.Contains(err.Error(), `no JWK provisioner named "nobody"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("another trust domain is refused by the name constraint check", func(t *testing.T) {
		up, err := upstream.NewStepCA(ctx, upstream.StepCAConfig{URL: s.url, RootFile: s.rootFile, Provisioner: "sigil", PasswordFile: s.pwFile})
		if err != nil {
			t.Fatal(err)
		}
		other := *tmpl
		other.URIs = []*url.URL{{Scheme: "spiffe", Host: "other.org"}}
		other.PermittedURIDomains = []string{"other.org"}
		_, err = up.SignCAWithSigner(ctx, &other, signer)
		if err == nil || !strings.Contains(err.Error(), "permitted URI domains") {
			t.Fatalf("err = %v, want the name constraint refused", err)
		}
	})
}

// x5cCredential issues a leaf for the X5C provisioner under parent and
// writes it (leaf first) and its key to files, as an operator hands them to
// Sigil.
func x5cCredential(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "sigil ca x5c"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "x5c.crt"), filepath.Join(dir, "x5c.key")
	writePEM(t, certFile, "CERTIFICATE", der, parent.Raw)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func TestStepCAUpstreamX5C(t *testing.T) {
	ctx := context.Background()
	s := startStepCA(t)
	newCAWith := func(t *testing.T, provisioner, certFile, keyFile string) (*ca.CA, error) {
		t.Helper()
		up, err := upstream.NewStepCA(ctx, upstream.StepCAConfig{
			URL: s.url, RootFile: s.rootFile, Provisioner: provisioner, X5CCertFile: certFile, X5CKeyFile: keyFile,
		})
		if err != nil {
			t.Fatalf("x5c upstream: %v", err)
		}
		st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sigil.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		c, err := ca.New(ca.Config{TrustDomain: td, Store: st, Keys: keys.NewMemory(), Upstream: up,
			CATTL: time.Hour, X509SVIDTTL: time.Minute, JWTSVIDTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c, c.Init(ctx)
	}

	t.Run("a certificate under the provisioner's root signs the CA", func(t *testing.T) {
		certFile, keyFile := x5cCredential(t, s.x5cRoot, s.x5cRootKey)
		c, err := newCAWith(t, x5cProvisioner, certFile, keyFile)
		if err != nil {
			t.Fatalf("init with step-ca's x5c provisioner: %v", err)
		}
		svid := signSVID(t, c, s, "spiffe://example.org/x5c-workload")
		caCert := svid.Certificates[1]
		if !slices.Equal(caCert.PermittedURIDomains, []string{"example.org"}) || !caCert.IsCA {
			t.Fatalf("signing certificate: CA %v, permitted URI domains %q", caCert.IsCA, caCert.PermittedURIDomains)
		}
		if err := caCert.CheckSignatureFrom(svid.Certificates[2]); err != nil || svid.Certificates[2].Subject.CommonName != "Test Intermediate" {
			t.Fatalf("signing certificate is not issued by step-ca's intermediate: %v", err)
		}
	})

	t.Run("a certificate under another root is refused", func(t *testing.T) {
		other, otherKey := newCA(t, "Not The X5C Root", nil, nil, -1)
		certFile, keyFile := x5cCredential(t, other, otherKey)
		_, err := newCAWith(t, x5cProvisioner, certFile, keyFile)
		if err == nil {
			t.Fatal("step-ca signed for an x5c certificate outside the provisioner's roots")
		}
		for _, want := range []string{"refused the x5c token", `does not chain to a root of X5C provisioner "sigil-x5c"`, "Not The X5C Root"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to contain %q", err, want)
			}
		}
	})
	t.Run("an unknown x5c provisioner is named", func(t *testing.T) {
		certFile, keyFile := x5cCredential(t, s.x5cRoot, s.x5cRootKey)
		_, err := newCAWith(t, "nobody", certFile, keyFile)
		if err == nil || !strings.Contains(err.Error(), `step-ca has no X5C provisioner named "nobody"`) {
			t.Fatalf("err = %v, want the unknown provisioner named", err)
		}
	})
}
