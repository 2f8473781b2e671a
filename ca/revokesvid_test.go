package ca_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store"
)

// A leaf revoked by serial: the CA refuses it in mTLS (SVIDRevoked), its
// CRLs list it and are signed by the issuing key, openssl with -crl_check
// refuses it, and the revocation survives a restart and reaches another
// replica sharing the store.
func TestRevokeSVIDBySerial(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	other, err := ca.New(ca.Config{TrustDomain: td, InstanceID: "b", Store: e.store, Keys: keys.NewMemory(), Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Init(ctx); err != nil {
		t.Fatal(err)
	}
	victim := e.sign(t, "spiffe://example.org/victim")
	bystander := e.sign(t, "spiffe://example.org/bystander")
	serial := victim.Certificates[0].SerialNumber

	if out, err := opensslCRLCheck(t, e, victim); err != nil {
		t.Fatalf("before revocation: openssl -crl_check: %v\n%s", err, out)
	}
	for _, bad := range []string{"", "zz", "-5", "0"} {
		if err := e.ca.RevokeSVID(ctx, "admin", bad, ""); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("revoke %q: %v, want ErrInvalid", bad, err)
		}
	}
	if err := e.ca.RevokeSVID(ctx, "admin", strings.ToUpper(serial.Text(16)), "spiffe://example.org/victim"); err != nil {
		t.Fatal(err)
	}
	if !e.ca.SVIDRevoked(serial) || e.ca.SVIDRevoked(bystander.Certificates[0].SerialNumber) {
		t.Fatal("SVIDRevoked: want the victim revoked and the bystander not")
	}

	crls := e.ca.CRLs()
	if len(crls) != 1 {
		t.Fatalf("%d CRLs, want one per signing key (1)", len(crls))
	}
	crl, err := x509.ParseRevocationList(crls[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(victim.Certificates[1]); err != nil {
		t.Fatalf("CRL not signed by the issuing key: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("CRL lists %v, want only %s", crl.RevokedCertificateEntries, serial.Text(16))
	}
	if got := crl.NextUpdate.Sub(e.clock.Now()); got != ca.CRLLife {
		t.Fatalf("CRL nextUpdate in %v, want %v", got, ca.CRLLife)
	}
	out, err := opensslCRLCheck(t, e, victim)
	if err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("openssl -crl_check accepted the revoked SVID: %v\n%s", err, out)
	}
	if out, err := opensslCRLCheck(t, e, bystander); err != nil {
		t.Fatalf("openssl -crl_check refused the bystander: %v\n%s", err, out)
	}

	// Another replica sees it at its next refresh (Run: every RevocationPoll).
	if other.SVIDRevoked(serial) {
		t.Fatal("replica b knew before any refresh: the test shows nothing")
	}
	if err := other.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if !other.SVIDRevoked(serial) {
		t.Fatal("replica b does not refuse the revoked serial after a refresh")
	}
	// And a restart keeps it.
	again, err := ca.New(ca.Config{TrustDomain: td, Store: e.store, Keys: e.keys, Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if !again.SVIDRevoked(serial) {
		t.Fatal("revocation lost across a restart")
	}
	// After the last authority expires, the record is pruned.
	e.clock.Advance(ca.DefaultCATTL + ca.CRLLife)
	if n, err := e.store.PruneRevokedSVIDs(ctx, e.clock.Now()); err != nil || n != 1 {
		t.Fatalf("prune after expiry: %d, %v; want 1", n, err)
	}
}

// opensslCRLCheck runs `openssl verify -partial_chain -crl_check` on the
// SVID with the bundle's authorities and the CA's CRLs.
func opensslCRLCheck(t *testing.T, e *env, svid *ca.X509SVID) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: apt-get install openssl")
	}
	b, err := e.ca.Bundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, "roots.pem"), b.X509Authorities()...)
	writePEM(t, filepath.Join(dir, "leaf.pem"), svid.Certificates[0])
	var crls []byte
	for _, der := range e.ca.CRLs() {
		crls = append(crls, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
	}
	if err := os.WriteFile(filepath.Join(dir, "crl.pem"), crls, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-partial_chain", "-crl_check", "-CRLfile", filepath.Join(dir, "crl.pem"),
		"-CAfile", filepath.Join(dir, "roots.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput()
	if err == nil && !strings.Contains(string(out), ": OK") {
		err = errors.New("no OK in the output")
	}
	return string(out), err
}

// Status shows the upstream roots (agents' bootstrap trust) apart from
// the keys: they are not the bundle's authorities.
func TestStatusShowsUpstreamRoots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	st, err := e.ca.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := e.up.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.UpstreamRoots) != 1 || !st.UpstreamRoots[0].Equal(roots[0]) {
		t.Fatalf("status upstream roots %d, want the upstream's root", len(st.UpstreamRoots))
	}
	b, err := e.ca.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.HasX509Authority(roots[0]) {
		t.Fatal("the upstream root is in the bundle")
	}
}
