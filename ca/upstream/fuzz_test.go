package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// FuzzParseCerts feeds arbitrary bytes to the PEM certificate reader used
// for operator-supplied files: it must return certificates or an error,
// never panic, and never both nothing and no error.
func FuzzParseCerts(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1e9, 0), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		f.Fatal(err)
	}
	one := certsPEM(c)
	f.Add(one)
	f.Add(append(append([]byte("junk\n"), one...), one...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := parseCerts(b)
		if err == nil && len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		if err != nil && certs != nil {
			t.Fatal("certificates and an error")
		}
	})
}
