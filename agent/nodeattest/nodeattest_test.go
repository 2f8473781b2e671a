package nodeattest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/agent/nodeattest"
	canodeattest "github.com/sigilhq/sigil/ca/nodeattest"
)

func selfSigned(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLoadX509PoP loads key and certificate files in each key encoding and
// checks that the CA side accepts the answers.
func TestLoadX509PoP(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	pk8, _ := x509.MarshalPKCS8PrivateKey(ed)
	tests := []struct {
		name  string
		key   crypto.Signer
		block *pem.Block
	}{
		{name: "sec1 ecdsa", key: ec, block: &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}},
		{name: "pkcs1 rsa", key: rk, block: &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}},
		{name: "pkcs8 ed25519", key: ed, block: &pem.Block{Type: "PRIVATE KEY", Bytes: pk8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cert := selfSigned(t, tt.key)
			certFile, keyFile := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
			if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, pem.EncodeToMemory(tt.block), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := nodeattest.LoadX509PoP(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			p := a.Params()
			if p.GetType() != "x509pop" || len(p.GetCertificates()) != 1 {
				t.Fatalf("params %v", p)
			}
			nonce := make([]byte, 32)
			rand.Read(nonce)
			sig, err := a.Answer(nonce)
			if err != nil {
				t.Fatal(err)
			}
			if err := canodeattest.VerifyPoP(cert.PublicKey, nonce, sig); err != nil {
				t.Fatalf("CA refuses the answer: %v", err)
			}
			nonce[0] ^= 1
			if canodeattest.VerifyPoP(cert.PublicKey, nonce, sig) == nil {
				t.Fatal("CA accepts an answer to another nonce")
			}
		})
	}
}

func TestX509PoPErrors(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := selfSigned(t, ec)
	if _, err := nodeattest.NewX509PoP([]*x509.Certificate{cert}, other); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: err = %v", err)
	}
	if _, err := nodeattest.NewX509PoP(nil, ec); err == nil {
		t.Fatal("empty chain accepted")
	}
	if _, err := nodeattest.LoadX509PoP(filepath.Join(t.TempDir(), "x.crt"), "y.key"); err == nil || !strings.Contains(err.Error(), "x.crt") {
		t.Fatalf("missing files: err = %v", err)
	}
	a, err := nodeattest.NewX509PoP([]*x509.Certificate{cert}, ec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Answer([]byte("short")); err == nil {
		t.Fatal("a 5-byte challenge was answered")
	}
	if _, err := (nodeattest.JoinToken{Token: "t"}).Answer([]byte("0123456789abcdef0123456789abcdef")); err == nil {
		t.Fatal("join token answered a challenge")
	}
	if p := (nodeattest.JoinToken{Token: "t"}).Params(); p.GetType() != "join_token" || p.GetToken() != "t" {
		t.Fatalf("join token params %v", p)
	}
}

// TestK8sPSATRereadsToken checks that each attestation reads the token file
// again (the kubelet rotates it) and that a missing, empty or oversized
// file is an error naming the problem, not parameters without a token.
func TestK8sPSATRereadsToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sigil-agent")
	a := nodeattest.K8sPSAT{Cluster: "prod", TokenPath: path}
	if _, err := a.LoadParams(); err == nil || !strings.Contains(err.Error(), "read token") {
		t.Fatalf("missing file: err = %v", err)
	}
	if p := a.Params(); p.GetType() != "k8s_psat" || p.GetToken() != "" || p.GetCluster() != "prod" {
		t.Fatalf("params without a token file: %v", p)
	}
	for _, tok := range []string{"first.token.v1", "second.token.v2"} {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := a.LoadParams()
		if err != nil {
			t.Fatal(err)
		}
		if p.GetType() != "k8s_psat" || p.GetToken() != tok || p.GetCluster() != "prod" || len(p.GetCertificates()) != 0 {
			t.Fatalf("params %v, want token %q of cluster prod", p, tok)
		}
		if a.Params().GetToken() != tok {
			t.Fatalf("Params() did not re-read the token")
		}
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"empty":     {data: []byte(" \n"), want: "is empty"},
		"oversized": {data: make([]byte, nodeattest.MaxPSATTokenLen+1), want: "larger than"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := a.LoadParams(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := (nodeattest.K8sPSAT{TokenPath: path}).LoadParams(); err == nil || !strings.Contains(err.Error(), "cluster") {
		t.Fatalf("no cluster: err = %v", err)
	}
	if _, err := a.Answer(make([]byte, 32)); err == nil {
		t.Fatal("k8s_psat answered a challenge")
	}
}
