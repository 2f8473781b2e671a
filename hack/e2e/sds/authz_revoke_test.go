package sds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sigilhq/sigil/internal/e2e"
)

// startAuthz runs `sigil authz run` beside the stack: a policy that allows
// everything, revocation from the agent's ROOTCA over SDS, a decision log.
// It returns a client and the decision log path.
func (s *stack) startAuthz(t *testing.T) (authv3.AuthorizationClient, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	e2e.WriteFile(t, filepath.Join(dir, "policies", "allow.rego"), "package envoy.authz\n\ndefault allow := true\n", 0o600)
	addr := e2e.FreeAddr(t)
	logPath := filepath.Join(dir, "decisions.log")
	e2e.WriteFile(t, filepath.Join(dir, "authz.yaml"), fmt.Sprintf("listen: %s\npolicy:\n  dir: %s\ndecision_log:\n  file: %s\nrevocation:\n  sds_socket: unix://%s\n",
		addr, filepath.Join(dir, "policies"), logPath, s.agentSock), 0o600)
	sigil.Start(t, "authz", "run", "--config", filepath.Join(dir, "authz.yaml"))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn), logPath
}

// check is the Check Envoy sends with include_peer_certificate: the peer's
// certificate URL-encoded PEM as Envoy encodes it.
func check(ctx context.Context, c authv3.AuthorizationClient, peer *x509.Certificate) (code.Code, error) {
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peer.Raw}))
	enc := strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(pemText)
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Principal: idEnvoy, Certificate: enc},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Host: "svc"}},
	}})
	if err != nil {
		return 0, err
	}
	return code.Code(resp.GetStatus().GetCode()), nil
}

// waitAllowed waits until authz allows peer (it denies every certificate
// until the agent's CRLs arrived).
func waitAllowed(t *testing.T, c authv3.AuthorizationClient, peer *x509.Certificate) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := check(timeout(t, 5*time.Second), c, peer)
		if err == nil && got == code.Code_OK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("authz never allowed the unrevoked SVID: %v, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `sigil svid revoke --serial` against real processes: `sigil authz run`,
// following the agent's ROOTCA over SDS, denies a Check presenting the
// revoked SVID (reason svid_revoked in the decision log) and still allows
// another SVID of the same issuer.
func TestAuthzDeniesRevokedSVID(t *testing.T) {
	s := startStack(t)
	client, logPath := s.startAuthz(t)
	victim := s.workloadSVID(t).Certificates
	bystander := forgeLeaf(t, victim[0], victim[1])
	waitAllowed(t, client, victim[0])
	start := time.Now()
	sigil.MustRun(t, s.admin("svid", "revoke", "--serial", strings.ToUpper(victim[0].SerialNumber.Text(16)))...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := check(timeout(t, 5*time.Second), client, victim[0])
		if err != nil {
			t.Fatal(err)
		}
		if got == code.Code_PERMISSION_DENIED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("authz still allows the revoked SVID 10 s after svid revoke")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("authz denies the revoked SVID %s after the revoke command started", time.Since(start).Round(time.Millisecond))
	if got, err := check(timeout(t, 5*time.Second), client, bystander); err != nil || got != code.Code_OK {
		t.Fatalf("authz on another SVID of the same issuer: %v, %v; want OK", got, err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		raw, _ := os.ReadFile(logPath)
		if strings.Contains(string(raw), `"reason":"svid_revoked"`) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the decision log has no svid_revoked decision:\n%s", raw)
		}
	}
}

// forgeLeaf is the twin of like with a fresh random serial under issuer (same
// issuer name and key ID). Its signature is by a throwaway key: authz
// checks revocation, not signatures (Envoy verified the chain before), so
// it stands for another SVID of the same issuer without minting one.
func forgeLeaf(t *testing.T, like, issuer *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *like
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	// Go refuses a signer that is not the parent's key: a parent that is
	// the issuer (name, key ID) with the throwaway key.
	parent := *issuer
	parent.PublicKey = key.Public()
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &parent, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Measures, over 20 revocations, the time from starting `sigil svid revoke`
// to `sigil authz run` denying a Check that presents the revoked
// certificate (polled every 5 ms). It reports p50/p99 and asserts no
// timing. Each run revokes a fresh serial of the real issuer (forgeLeaf).
func TestRevokeToAuthzTimings(t *testing.T) {
	s := startStack(t)
	client, _ := s.startAuthz(t)
	real := s.workloadSVID(t).Certificates
	waitAllowed(t, client, real[0])
	const runs = 20
	var took []time.Duration
	for i := range runs {
		// Each revocation re-keys the CA (for go-spiffe peers): forge under
		// the issuer the agent serves now, and again while a re-key is
		// taking the last one out of the bundle.
		var leaf *x509.Certificate
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if i > 0 {
				real = s.workloadSVID(t).Certificates
			}
			leaf = forgeLeaf(t, real[0], real[1])
			got, err := check(timeout(t, 5*time.Second), client, leaf)
			if err == nil && got == code.Code_OK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d: before the revocation: %v, %v", i, got, err)
			}
		}
		start := time.Now()
		sigil.MustRun(t, s.admin("svid", "revoke", "--serial", leaf.SerialNumber.Text(16))...)
		for {
			got, err := check(timeout(t, 5*time.Second), client, leaf)
			if err != nil {
				t.Fatal(err)
			}
			if got == code.Code_PERMISSION_DENIED {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("run %d: authz still allows the revoked serial after 10 s", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("svid revoke → authz denies, %d runs (CLI process start included): p50 %s, p99 %s, max %s",
		runs, took[runs/2].Round(time.Millisecond), took[(runs*99+99)/100-1].Round(time.Millisecond), took[runs-1].Round(time.Millisecond))
}
