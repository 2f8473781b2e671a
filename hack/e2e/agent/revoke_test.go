package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/internal/e2e"
)

// fetch returns the uid-0 SVID and our trust domain's bundle as the agent
// serves them to go-spiffe, retrying for 30 s while the agent has none.
func (e *env) fetch(t *testing.T) (*x509svid.SVID, *x509bundle.Bundle) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var x *workloadapi.X509Context
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		x, err = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+e.agentSock))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch x509 context: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, err := x.Bundles.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatal(err)
	}
	return x.DefaultSVID(), b
}

// adminCall calls the admin API over mTLS on the CA's server address with
// svid as client certificate, verifying the CA against bundle.
func (e *env) adminCall(t *testing.T, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	t.Helper()
	conf := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://"+td+"/sigil/ca")))
	cc, err := grpc.NewClient(e.caAddr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = adminv1.NewAdminClient(cc).CAStatus(ctx, &adminv1.CAStatusRequest{})
	return err
}

// mint signs a fresh leaf for the SVID's ID and entry with caKey under caCert,
// as an attacker holding a copy of the CA key file would.
func mint(t *testing.T, like *x509svid.SVID, caCert *x509.Certificate, caKey crypto.Signer) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := like.Certificates[0]
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Organization: []string{"Sigil"}, SerialNumber: leaf.Subject.SerialNumber},
		URIs:                  leaf.URIs,
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: like.ID, Certificates: append([]*x509.Certificate{cert}, like.Certificates[1:]...), PrivateKey: key}
}

func writeCerts(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	e2e.WriteFile(t, path, string(b), 0o644)
}

// opensslVerify runs `openssl verify -partial_chain` on svid with the
// bundle's authorities as anchors.
func opensslVerify(t *testing.T, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	t.Helper()
	dir := t.TempDir()
	writeCerts(t, filepath.Join(dir, "bundle.pem"), bundle.X509Authorities()...)
	writeCerts(t, filepath.Join(dir, "chain.pem"), svid.Certificates[1:]...)
	writeCerts(t, filepath.Join(dir, "leaf.pem"), svid.Certificates[0])
	out, err := exec.Command("openssl", "verify", "-partial_chain", "-CAfile", filepath.Join(dir, "bundle.pem"),
		"-untrusted", filepath.Join(dir, "chain.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput()
	if err == nil && !strings.Contains(string(out), ": OK") {
		err = errors.New(string(out))
	}
	return err
}

func keyID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// The attack of issue 10 against real processes; see README.md, step 4.
// `sigil ca prepare; activate; taint K1; revoke K1`: an SVID K1 signed
// before, and a leaf freshly minted with a copy of K1's key file, must be
// refused by go-spiffe and openssl against the bundle the agent serves and
// by the CA's admin mTLS; K1's key file must be gone.
func TestRevokedCAKeyIsRefusedEverywhere(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: apt-get install openssl")
	}
	e := newEnv(t)
	e.startCA(t)
	e.enrol(t)
	e.startAgent(t)
	out := sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idRoot, "--parent-id", e.agentID, "--selector", "unix:uid:0", "--admin")...)
	t.Logf("admin entry: %s", strings.TrimSpace(out))

	// 4a. Before: the K1 SVID verifies and opens the admin API; so does a
	// leaf minted with a copy of K1's key file.
	var kept *x509svid.SVID
	var bundle *x509bundle.Bundle
	deadline := time.Now().Add(30 * time.Second)
	for {
		kept, bundle = e.fetch(t)
		if kept.ID.String() == idRoot {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never served %s (serves %s)", idRoot, kept.ID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	k1Cert := kept.Certificates[1]
	k1 := keyID(k1Cert)
	keyFile := filepath.Join(e.dir, "ca", "keys", "x509-1.key")
	stolen, err := keys.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatalf("K1's key file: %v", err)
	}
	forged := mint(t, kept, k1Cert, stolen)
	for name, s := range map[string]*x509svid.SVID{"K1 SVID": kept, "leaf minted with K1's key file": forged} {
		if _, _, err := x509svid.Verify(s.Certificates, bundle); err != nil {
			t.Fatalf("before revoke, go-spiffe refuses the %s: %v", name, err)
		}
		if err := opensslVerify(t, s, bundle); err != nil {
			t.Fatalf("before revoke, openssl refuses the %s: %v", name, err)
		}
		if err := e.adminCall(t, s, bundle); err != nil {
			t.Fatalf("before revoke, the admin API refuses the %s: %v", name, err)
		}
	}

	// 4b. prepare, activate, taint K1, revoke K1.
	start := time.Now()
	sigil.MustRun(t, e.admin("ca", "prepare")...)
	sigil.MustRun(t, e.admin("ca", "activate")...)
	sigil.MustRun(t, e.admin("ca", "taint", k1)...)
	sigil.MustRun(t, e.admin("ca", "revoke", k1)...)
	revoked := time.Now()

	// 4c. The agent serves a bundle without K1 (and a fresh SVID).
	deadline = time.Now().Add(10 * time.Second)
	var fresh *x509svid.SVID
	for {
		fresh, bundle = e.fetch(t)
		if !bundle.HasX509Authority(k1Cert) && !fresh.Certificates[1].Equal(k1Cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent still serves K1 in its bundle or an SVID of K1 10 s after the revoke")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("revoke command done %s after prepare; bundle without K1 at the agent %s after the revoke command", revoked.Sub(start), time.Since(revoked))

	for name, s := range map[string]*x509svid.SVID{"K1 SVID": kept, "leaf minted with K1's key file": forged} {
		if _, _, err := x509svid.Verify(s.Certificates, bundle); err == nil {
			t.Errorf("after revoke, go-spiffe accepts the %s", name)
		}
		if err := opensslVerify(t, s, bundle); err == nil {
			t.Errorf("after revoke, openssl verify -partial_chain accepts the %s", name)
		}
		if err := e.adminCall(t, s, bundle); err == nil {
			t.Errorf("after revoke, the admin API accepts the %s", name)
		} else {
			t.Logf("admin API refuses the %s: %v", name, err)
		}
	}
	// The fresh SVID (the new key) still works everywhere.
	if err := opensslVerify(t, fresh, bundle); err != nil {
		t.Errorf("openssl refuses the SVID of the new key: %v", err)
	}
	if err := e.adminCall(t, fresh, bundle); err != nil {
		t.Errorf("the admin API refuses the SVID of the new key: %v", err)
	}
	// 4d. K1 is destroyed.
	if _, err := os.Stat(keyFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("K1's key file is still on disk: %v", err)
	}
	// 4e. The agent renewed its own SVID (K1 signed it) when K1 was
	// tainted: restarted, it connects with the persisted SVID, without
	// attesting again (its join token is spent), and syncs a new entry.
	e.agent.WaitForOutput(t, "renewing now", 5*time.Second)
	if _, err := e.agent.Interrupt(t, 10*time.Second); err != nil {
		t.Fatalf("agent did not stop: %v\n%s", err, e.agent.Output())
	}
	e.startAgent(t)
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idExtra, "--parent-id", e.agentID, "--selector", "unix:uid:0")...)
	deadline = time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+e.agentSock))
		cancel()
		if err == nil && len(x.SVIDs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted agent never synced the new entry (%v):\n%s", err, e.agent.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// `sigil svid revoke --serial`: the revoked client SVID, which opened the
// admin API over mTLS before, is refused by the real CA process after.
func TestRevokedSVIDIsRefusedByCAMTLS(t *testing.T) {
	e := newEnv(t)
	e.startCA(t)
	e.enrol(t)
	e.startAgent(t)
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idRoot, "--parent-id", e.agentID, "--selector", "unix:uid:0", "--admin")...)
	var victim *x509svid.SVID
	var bundle *x509bundle.Bundle
	deadline := time.Now().Add(30 * time.Second)
	for {
		victim, bundle = e.fetch(t)
		if victim.ID.String() == idRoot {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never served %s (serves %s)", idRoot, victim.ID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := e.adminCall(t, victim, bundle); err != nil {
		t.Fatalf("before revoke, the admin API refuses the SVID: %v", err)
	}
	serial := strings.ToUpper(victim.Certificates[0].SerialNumber.Text(16))
	start := time.Now()
	sigil.MustRun(t, e.admin("svid", "revoke", "--serial", serial, "--spiffe-id", idRoot)...)
	err := e.adminCall(t, victim, bundle)
	if err == nil {
		t.Fatal("after svid revoke, the CA's admin mTLS accepts the revoked SVID")
	}
	t.Logf("admin mTLS refuses the revoked SVID %s after the revoke command started: %v", time.Since(start), err)
}
