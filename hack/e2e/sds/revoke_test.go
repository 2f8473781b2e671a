package sds

import (
	"crypto/x509"
	"encoding/pem"
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
