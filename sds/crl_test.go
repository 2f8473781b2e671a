package sds_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// A revoked SVID: the validation contexts of our trust domain (ROOTCA and
// spiffe://TD) carry the CA's CRL listing it, so Envoy refuses it as a
// peer. A CRL the envoytest client gets is checked for what it lists and
// who signed it.
func TestValidationContextCarriesCRLs(t *testing.T) {
	h := newHarness(t)
	cart := h.ca.Issue(t, cartID)
	victim := h.ca.Issue(t, otherID)
	h.setEntry("entry-a", cart, cartUID)
	s, err := h.client.StreamSecrets(as(t, cartUID), "ROOTCA", "spiffe://example.org")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if crl := s.Secret("ROOTCA").GetValidationContext().GetCrl(); crl != nil {
		t.Fatalf("ROOTCA carries a CRL before any revocation: %v", crl)
	}
	h.src.SetCRLs([][]byte{h.ca.CRL(t, victim.Certificates[0].SerialNumber)})
	if _, err := s.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ROOTCA", "spiffe://example.org"} {
		listsVictim(t, name, s.Secret(name), victim.Certificates, cart.Certificates[0])
	}
}

func listsVictim(t *testing.T, name string, s *tlsv3.Secret, chain []*x509.Certificate, bystander *x509.Certificate) {
	victim := chain[0]
	t.Helper()
	if !s.GetValidationContext().GetOnlyVerifyLeafCertCrl() {
		t.Fatalf("%s: only_verify_leaf_cert_crl is not set: Envoy would want a CRL for every certificate of the chain and refuse every peer", name)
	}
	raw := s.GetValidationContext().GetCrl().GetInlineBytes()
	blk, rest := pem.Decode(raw)
	if blk == nil || blk.Type != "X509 CRL" || len(rest) != 0 {
		t.Fatalf("%s: crl is not one PEM X509 CRL: %q", name, raw)
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(chain) < 2 {
		t.Fatal("the test CA issued no intermediate")
	}
	if err := crl.CheckSignatureFrom(chain[1]); err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[e.SerialNumber.Text(16)] = true
	}
	if !listed[victim.SerialNumber.Text(16)] || listed[bystander.SerialNumber.Text(16)] {
		t.Fatalf("%s: CRL lists %v; want the victim %s and not the bystander", name, listed, victim.SerialNumber.Text(16))
	}
}
