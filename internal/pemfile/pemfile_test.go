package pemfile_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/pemfile"
	"github.com/sigilhq/sigil/internal/testca"
)

func certs(t testing.TB) (root, intermediate *x509.Certificate) {
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org")).Chain(t, 1)
	return ca.Roots()[0], ca.Certificates()[0]
}

func block(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseCerts(t *testing.T) {
	root, inter := certs(t)
	one, two := block("CERTIFICATE", root.Raw), block("CERTIFICATE", inter.Raw)
	truncated := one[:len(one)-40]
	tests := []struct {
		name    string
		data    []byte
		want    []*x509.Certificate
		wantErr string
	}{
		{name: "one", data: one, want: []*x509.Certificate{root}},
		{name: "two in order", data: cat(two, one), want: []*x509.Certificate{inter, root}},
		{name: "openssl text before blocks", data: cat([]byte("subject=CN=x\nissuer=CN=y\n"), two, []byte("Bag Attributes\n  friendlyName: r\n"), one), want: []*x509.Certificate{inter, root}},
		{name: "crlf and trailing whitespace", data: cat(bytes.ReplaceAll(one, []byte("\n"), []byte("\r\n")), []byte("\r\n\n  \t")), want: []*x509.Certificate{root}},
		{name: "empty", data: nil, wantErr: "no PEM block"},
		{name: "only whitespace", data: []byte("\n \n"), wantErr: "no PEM block"},
		{name: "not PEM", data: []byte("hello"), wantErr: "no PEM block"},
		{name: "DER", data: root.Raw, wantErr: "no PEM block"},
		{name: "key block", data: cat(one, block("PRIVATE KEY", []byte{1})), wantErr: `block 2: unexpected PEM block type "PRIVATE KEY", want CERTIFICATE`},
		{name: "long block type cut short", data: block(strings.Repeat("X", 200), []byte{1}), wantErr: `"` + strings.Repeat("X", 64) + `"...`},
		{name: "trailing text", data: cat(one, []byte("-- end of bundle\n")), wantErr: "trailing data after PEM block 1"},
		{name: "truncated last block", data: cat(two, truncated), wantErr: "malformed PEM block after 1 good ones"},
		{name: "truncated block before a good one", data: cat(truncated, []byte("\n"), two), wantErr: "malformed PEM block after 0 good ones"},
		{name: "bad base64", data: []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), wantErr: "malformed PEM block"},
		{name: "mismatched END", data: []byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END X-----\n"), wantErr: "malformed PEM block"},
		{name: "not a certificate inside", data: cat(one, block("CERTIFICATE", []byte{0x30, 0})), wantErr: "certificate 2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pemfile.ParseCerts(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != nil {
					t.Fatalf("got %d certs, err %v; want an error containing %q", len(got), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d certs, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Fatalf("cert %d is %s, want %s", i, got[i].Subject, tt.want[i].Subject)
				}
			}
		})
	}
}

func TestReadCerts(t *testing.T) {
	root, _ := certs(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.pem", block("CERTIFICATE", root.Raw))
	big := write("big.pem", cat(block("CERTIFICATE", root.Raw), bytes.Repeat([]byte(" "), pemfile.MaxFileSize)))
	garbage := write("garbage.pem", []byte("hello"))
	tests := []struct {
		name, path, wantErr string
		wantIs              error
	}{
		{name: "good", path: good},
		{name: "missing", path: filepath.Join(dir, "nope.pem"), wantErr: "nope.pem", wantIs: fs.ErrNotExist},
		{name: "too big", path: big, wantErr: "big.pem: larger than"},
		{name: "garbage names the file", path: garbage, wantErr: "garbage.pem: no PEM block"},
		{name: "directory", path: dir, wantErr: dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pemfile.ReadCerts(tt.path)
			if tt.wantErr == "" {
				if err != nil || len(got) != 1 || !got[0].Equal(root) {
					t.Fatalf("got %d certs, %v", len(got), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Fatalf("err = %v, want one containing %q (is %v)", err, tt.wantErr, tt.wantIs)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return block("PRIVATE KEY", der)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := certs(t)
	ecParams := block("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	tests := []struct {
		name    string
		data    []byte
		want    crypto.Signer
		wantErr string
	}{
		{name: "pkcs8 ec", data: pkcs8(ec), want: ec},
		{name: "pkcs8 rsa", data: pkcs8(rsaKey), want: rsaKey},
		{name: "pkcs8 ed25519", data: pkcs8(ed), want: ed},
		{name: "sec1", data: block("EC PRIVATE KEY", sec1), want: ec},
		{name: "sec1 after openssl ec parameters", data: cat(ecParams, block("EC PRIVATE KEY", sec1)), want: ec},
		{name: "pkcs1", data: block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), want: rsaKey},
		{name: "empty", data: nil, wantErr: "no PEM block"},
		{name: "certificate", data: block("CERTIFICATE", root.Raw), wantErr: `unexpected PEM block type "CERTIFICATE", want a private key`},
		{name: "public key", data: block("PUBLIC KEY", []byte{1}), wantErr: `unexpected PEM block type "PUBLIC KEY"`},
		{name: "ec parameters alone", data: ecParams, wantErr: `unexpected PEM block type "EC PARAMETERS"`},
		{name: "encrypted pkcs8", data: block("ENCRYPTED PRIVATE KEY", []byte{1}), wantErr: "encrypted keys are not supported"},
		{name: "encrypted legacy", data: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}}), wantErr: "encrypted keys are not supported"},
		{name: "key and certificate", data: cat(pkcs8(ec), block("CERTIFICATE", root.Raw)), wantErr: "2 PEM blocks, want one private key"},
		{name: "two keys", data: cat(pkcs8(ec), pkcs8(ec)), wantErr: "2 PEM blocks"},
		{name: "certificate chain", data: cat(block("CERTIFICATE", root.Raw), block("CERTIFICATE", root.Raw)), wantErr: `unexpected PEM block type "CERTIFICATE", want a private key`},
		{name: "trailing text", data: cat(pkcs8(ec), []byte("x")), wantErr: "trailing data"},
		{name: "truncated", data: pkcs8(ec)[:60], wantErr: "malformed PEM block"},
		{name: "garbage in a key block", data: block("PRIVATE KEY", []byte{0x30, 0}), wantErr: "PRIVATE KEY:"},
		{name: "x25519 cannot sign", data: pkcs8(x25519), wantErr: "*ecdh.PrivateKey, which cannot sign"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pemfile.ParseKey(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != nil {
					t.Fatalf("got %T, err %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if eq, ok := got.(interface{ Equal(crypto.PrivateKey) bool }); !ok || !eq.Equal(tt.want) {
				t.Fatalf("got a different %T", got)
			}
		})
	}
}

// FuzzParse feeds arbitrary bytes to both parsers: each returns a result or
// an error, never both, never neither, and never panics.
func FuzzParse(f *testing.F) {
	root, inter := certs(f)
	one := block("CERTIFICATE", root.Raw)
	f.Add(one)
	f.Add(cat([]byte("junk\n"), one, block("CERTIFICATE", inter.Raw)))
	f.Add(one[:len(one)-30])
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := pemfile.ParseCerts(b)
		if (err == nil) == (certs == nil) || (err == nil && len(certs) == 0) {
			t.Fatalf("ParseCerts = %d certs, %v", len(certs), err)
		}
		key, err := pemfile.ParseKey(b)
		if (err == nil) == (key == nil) {
			t.Fatalf("ParseKey = %T, %v", key, err)
		}
	})
}
