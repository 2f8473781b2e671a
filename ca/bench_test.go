package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca"
)

// BenchmarkSignX509SVID measures the whole in-process path: CSR bytes in,
// parsed and checked, signed, and the SVID checked with go-spiffe.
func BenchmarkSignX509SVID(b *testing.B) {
	e := newEnv(b)
	csrDER := makeCSR(b, ecKey(b), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://example.org/ns/shop/sa/cart")}})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		csr, err := ca.ParseCSR(csrDER, td)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.ca.SignX509SVID(ctx, csr, ca.SVIDParams{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawCSRToCertificate is the floor: parse the CSR, check its
// signature and call x509.CreateCertificate with the same P-256 CA, nothing
// else.
func BenchmarkRawCSRToCertificate(b *testing.B) {
	caKey := ecKey(b)
	caTmpl := &x509.Certificate{SerialNumber: newSerial(), Subject: pkix.Name{CommonName: "raw"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	csrDER := makeCSR(b, ecKey(b), &x509.CertificateRequest{URIs: []*url.URL{uri("spiffe://example.org/ns/shop/sa/cart")}})
	b.ReportAllocs()
	for b.Loop() {
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			b.Fatal(err)
		}
		if err := csr.CheckSignature(); err != nil {
			b.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: newSerial(), URIs: csr.URIs, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, csr.PublicKey, caKey); err != nil {
			b.Fatal(err)
		}
	}
}
