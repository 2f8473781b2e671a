package nodeapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
)

// FuzzParseAgentCSR: an agent's CSR from outside must never panic the
// parser, and whatever it accepts must carry a key the CSR really signed.
func FuzzParseAgentCSR(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := parseAgentCSR(der)
		if err != nil {
			return
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil || req.CheckSignature() != nil {
			t.Fatalf("accepted a CSR that does not parse or verify")
		}
		if k, ok := pub.(interface{ Equal(any) bool }); ok && !k.Equal(req.PublicKey) {
			t.Fatalf("returned a key other than the CSR's")
		}
	})
}
