package sds

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/sigilhq/sigil/internal/envoytest"
)

// crlLists reports whether the validation context's CRL, signed by
// issuer, lists serial.
func crlLists(t *testing.T, sec *tlsv3.Secret, issuer *x509.Certificate, serial string) bool {
	t.Helper()
	rest := sec.GetValidationContext().GetCrl().GetInlineBytes()
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return false
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			t.Fatalf("validation context CRL: %v", err)
		}
		if crl.CheckSignatureFrom(issuer) != nil {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Text(16) == serial {
				return true
			}
		}
	}
}

// `sigil svid revoke --serial` against real processes: the ROOTCA
// validation context the agent serves Envoy gets a CRL, signed by the
// SVID's issuing key, that lists the revoked serial.
func TestRevokedSVIDReachesTheSDSValidationContext(t *testing.T) {
	s := startStack(t)
	client, err := envoytest.Dial(s.agentSock, envoytest.Node("sidecar~127.0.0.1~e2e-envoy~e2e.svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	victim := s.workloadSVID(t)
	serial := victim.Certificates[0].SerialNumber.Text(16)
	sotw, err := client.StreamSecrets(timeout(t, time.Minute), "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sotw.Close)
	for sotw.Secret("ROOTCA") == nil {
		if _, err := sotw.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if crlLists(t, sotw.Secret("ROOTCA"), victim.Certificates[1], serial) {
		t.Fatal("ROOTCA lists the serial before the revocation: the test shows nothing")
	}
	start := time.Now()
	sigil.MustRun(t, s.admin("svid", "revoke", "--serial", strings.ToUpper(serial))...)
	for !crlLists(t, sotw.Secret("ROOTCA"), victim.Certificates[1], serial) {
		if _, err := sotw.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatalf("no ROOTCA with a CRL listing %s within 10 s: %v", serial, err)
		}
	}
	t.Logf("ROOTCA lists the revoked serial %s after the revoke command started", time.Since(start).Round(time.Millisecond))
}

// crlListsAny reports whether a CRL of the validation context, signed by
// one of its trusted CAs, lists serial.
func crlListsAny(t *testing.T, sec *tlsv3.Secret, serial string) bool {
	t.Helper()
	rest := sec.GetValidationContext().GetTrustedCa().GetInlineBytes()
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return false
		}
		ca, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("validation context trusted_ca: %v", err)
		}
		if crlLists(t, sec, ca, serial) {
			return true
		}
	}
}

// Measures, over 20 revocations, the time from starting `sigil svid revoke`
// to the ROOTCA validation context at the agent listing the serial. It
// reports p50/p99 and asserts no timing. The serials are random (a CRL lists
// whatever was revoked, issued or not), so each run is a new revocation.
func TestRevokeToSDSTimings(t *testing.T) {
	s := startStack(t)
	client, err := envoytest.Dial(s.agentSock, envoytest.Node("sidecar~127.0.0.1~e2e-envoy~e2e.svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// Every revocation re-keys (ca/rekey.go): the issuing key changes
	// during the runs, so any current signing key's CRL counts.
	s.workloadSVID(t)
	sotw, err := client.StreamSecrets(timeout(t, 5*time.Minute), "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sotw.Close)
	for sotw.Secret("ROOTCA") == nil {
		if _, err := sotw.Next(timeout(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	const runs = 20
	var took []time.Duration
	for i := range runs {
		serial := fmt.Sprintf("%x", time.Now().UnixNano()+int64(i))
		start := time.Now()
		sigil.MustRun(t, s.admin("svid", "revoke", "--serial", serial)...)
		for !crlListsAny(t, sotw.Secret("ROOTCA"), serial) {
			if _, err := sotw.Next(timeout(t, 10*time.Second)); err != nil {
				t.Fatalf("run %d: no ROOTCA listing %s within 10 s: %v", i, serial, err)
			}
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("svid revoke → ROOTCA CRL at the agent's SDS, %d runs (CLI process start included): p50 %s, p99 %s, max %s",
		runs, took[runs/2].Round(time.Millisecond), took[(runs*99+99)/100-1].Round(time.Millisecond), took[runs-1].Round(time.Millisecond))
}
