package keys_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/internal/hsmtest"
)

// backend opens a fresh manager; reopen (nil for Memory) closes it and opens
// the same store again.
type backend struct {
	name string
	open func(t testing.TB) (m keys.Manager, reopen func(t testing.TB) keys.Manager)
}

var _ keys.Manager = (*keys.PKCS11)(nil)

func backends() []backend {
	return []backend{
		{name: "memory", open: func(t testing.TB) (keys.Manager, func(testing.TB) keys.Manager) {
			return keys.NewMemory(), nil
		}},
		{name: "disk", open: func(t testing.TB) (keys.Manager, func(testing.TB) keys.Manager) {
			dir := filepath.Join(t.TempDir(), "keys")
			d, err := keys.NewDisk(dir)
			if err != nil {
				t.Fatal(err)
			}
			return d, func(t testing.TB) keys.Manager {
				d, err := keys.NewDisk(dir)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
		}},
		{name: "pkcs11", open: func(t testing.TB) (keys.Manager, func(testing.TB) keys.Manager) {
			uri := hsmtest.Token(t)
			open := func(t testing.TB) *keys.PKCS11 {
				p, err := keys.NewPKCS11(context.Background(), keys.PKCS11Config{URI: uri})
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			cur := open(t)
			var mu sync.Mutex
			t.Cleanup(func() {
				mu.Lock()
				defer mu.Unlock()
				cur.Close()
			})
			return cur, func(t testing.TB) keys.Manager {
				mu.Lock()
				defer mu.Unlock()
				if err := cur.Close(); err != nil {
					t.Fatal(err)
				}
				cur = open(t)
				return cur
			}
		}},
	}
}

// checkSigner signs a digest with s and verifies it with s.Public(), and
// checks the key is of type typ.
func checkSigner(t testing.TB, s crypto.Signer, typ keys.Type) {
	t.Helper()
	digest := sha256.Sum256([]byte("sigil"))
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	switch pub := s.Public().(type) {
	case *ecdsa.PublicKey:
		want := map[keys.Type]elliptic.Curve{keys.ECP256: elliptic.P256(), keys.ECP384: elliptic.P384()}[typ]
		if pub.Curve != want {
			t.Fatalf("key type %s: got curve %s", typ, pub.Curve.Params().Name)
		}
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatal("ecdsa signature does not verify")
		}
	case *rsa.PublicKey:
		want := map[keys.Type]int{keys.RSA2048: 2048, keys.RSA3072: 3072, keys.RSA4096: 4096}[typ]
		if pub.N.BitLen() != want {
			t.Fatalf("key type %s: got %d-bit rsa", typ, pub.N.BitLen())
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			t.Fatalf("rsa signature does not verify: %v", err)
		}
	default:
		t.Fatalf("key type %s: unexpected public key %T", typ, pub)
	}
}

func samePublic(a, b crypto.PublicKey) bool {
	return a.(interface{ Equal(crypto.PublicKey) bool }).Equal(b)
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			m, reopen := b.open(t)

			t.Run("generate each type", func(t *testing.T) {
				for _, typ := range keys.Types() {
					t.Run(string(typ), func(t *testing.T) {
						name := "gen-" + string(typ)
						s, err := m.GenerateKey(ctx, name, typ)
						if err != nil {
							t.Fatal(err)
						}
						checkSigner(t, s, typ)
						got, err := m.Signer(ctx, name)
						if err != nil {
							t.Fatal(err)
						}
						if !samePublic(s.Public(), got.Public()) {
							t.Fatal("Signer returned a different key than GenerateKey")
						}
						checkSigner(t, got, typ)
					})
				}
			})

			t.Run("not found", func(t *testing.T) {
				_, err := m.Signer(ctx, "never-made")
				if !errors.Is(err, keys.ErrNotFound) {
					t.Fatalf("got %v, want ErrNotFound", err)
				}
			})

			t.Run("replace", func(t *testing.T) {
				first, err := m.GenerateKey(ctx, "x509-1", keys.ECP256)
				if err != nil {
					t.Fatal(err)
				}
				second, err := m.GenerateKey(ctx, "x509-1", keys.ECP384)
				if err != nil {
					t.Fatal(err)
				}
				if samePublic(first.Public(), second.Public()) {
					t.Fatal("replacement has the old key")
				}
				got, err := m.Signer(ctx, "x509-1")
				if err != nil {
					t.Fatal(err)
				}
				if !samePublic(got.Public(), second.Public()) {
					t.Fatal("Signer after replacement does not return the new key")
				}
				checkSigner(t, got, keys.ECP384)
			})

			t.Run("invalid names", func(t *testing.T) {
				for _, name := range []string{"", "Root", "a/b", "../root", "a_b", "a.b", "a b", "ü", strings.Repeat("a", 65)} {
					if _, err := m.GenerateKey(ctx, name, keys.ECP256); err == nil || !strings.Contains(err.Error(), "invalid key name") {
						t.Errorf("GenerateKey(%q): got %v, want invalid key name", name, err)
					}
					if _, err := m.Signer(ctx, name); err == nil || !strings.Contains(err.Error(), "invalid key name") {
						t.Errorf("Signer(%q): got %v, want invalid key name", name, err)
					}
				}
				if _, err := m.GenerateKey(ctx, strings.Repeat("a", 64), keys.ECP256); err != nil {
					t.Errorf("64-character name refused: %v", err)
				}
			})

			t.Run("invalid type", func(t *testing.T) {
				_, err := m.GenerateKey(ctx, "bad-type", keys.Type("ed25519"))
				if err == nil || !strings.Contains(err.Error(), "ec-p256") {
					t.Fatalf("got %v, want an error listing valid types", err)
				}
				if _, err := m.Signer(ctx, "bad-type"); !errors.Is(err, keys.ErrNotFound) {
					t.Fatalf("a refused GenerateKey left a key behind: %v", err)
				}
			})

			t.Run("delete", func(t *testing.T) {
				d, ok := m.(keys.Deleter)
				if !ok {
					t.Fatalf("%T does not implement Deleter", m)
				}
				if _, err := m.GenerateKey(ctx, "doomed", keys.ECP256); err != nil {
					t.Fatal(err)
				}
				if err := d.DeleteKey(ctx, "doomed"); err != nil {
					t.Fatal(err)
				}
				if _, err := m.Signer(ctx, "doomed"); !errors.Is(err, keys.ErrNotFound) {
					t.Fatalf("Signer after delete: got %v, want ErrNotFound", err)
				}
				if err := d.DeleteKey(ctx, "doomed"); !errors.Is(err, keys.ErrNotFound) {
					t.Fatalf("second delete: got %v, want ErrNotFound", err)
				}
			})

			t.Run("concurrent", func(t *testing.T) {
				stable, err := m.GenerateKey(ctx, "stable", keys.ECP256)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := m.GenerateKey(ctx, "shared", keys.ECP256); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				errs := make(chan error, 64)
				for i := range 4 {
					wg.Go(func() { // each makes and uses its own key
						name := fmt.Sprintf("jwt-%d", i)
						for range 3 {
							s, err := m.GenerateKey(ctx, name, keys.ECP256)
							if err != nil {
								errs <- err
								return
							}
							digest := sha256.Sum256([]byte(name))
							if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
								errs <- err
								return
							}
						}
					})
					wg.Go(func() { // all sign with one key at once
						for range 5 {
							digest := sha256.Sum256([]byte("stable"))
							sig, err := stable.Sign(rand.Reader, digest[:], crypto.SHA256)
							if err != nil {
								errs <- err
								return
							}
							if !ecdsa.VerifyASN1(stable.Public().(*ecdsa.PublicKey), digest[:], sig) {
								errs <- errors.New("concurrent signature does not verify")
								return
							}
						}
					})
					wg.Go(func() { // a key being replaced is always found
						for range 5 {
							s, err := m.Signer(ctx, "shared")
							if err != nil {
								errs <- err
								return
							}
							if _, ok := s.Public().(*ecdsa.PublicKey); !ok {
								errs <- fmt.Errorf("shared key is a %T", s.Public())
								return
							}
						}
					})
				}
				wg.Go(func() {
					for range 3 {
						if _, err := m.GenerateKey(ctx, "shared", keys.ECP256); err != nil {
							errs <- err
							return
						}
					}
				})
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})

			if reopen == nil {
				return
			}
			t.Run("survives reopen", func(t *testing.T) {
				s, err := m.GenerateKey(ctx, "root", keys.ECP256)
				if err != nil {
					t.Fatal(err)
				}
				m2 := reopen(t)
				got, err := m2.Signer(ctx, "root")
				if err != nil {
					t.Fatal(err)
				}
				if !samePublic(s.Public(), got.Public()) {
					t.Fatal("reopened store returned a different key")
				}
				checkSigner(t, got, keys.ECP256)
			})
		})
	}
}

func TestParseType(t *testing.T) {
	tests := []struct {
		in      string
		want    keys.Type
		wantErr bool
	}{
		{in: "ec-p256", want: keys.ECP256},
		{in: "ec-p384", want: keys.ECP384},
		{in: "rsa-2048", want: keys.RSA2048},
		{in: "rsa-3072", want: keys.RSA3072},
		{in: "rsa-4096", want: keys.RSA4096},
		{in: "EC-P256", wantErr: true},
		{in: "ed25519", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := keys.ParseType(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096") {
					t.Fatalf("got %v, want an error listing the valid types", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDiskFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	d, err := keys.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("key directory mode: %v %v, want 0700", fi.Mode(), err)
	}
	if _, err := d.GenerateKey(ctx, "x509-3", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x509-3.key")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("key directory holds %d entries, want only x509-3.key (no temp files)", len(entries))
	}

	t.Run("group or world readable refused", func(t *testing.T) {
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := d.Signer(ctx, "x509-3")
			if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
				t.Errorf("mode %04o: got %v, want a chmod 600 hint", mode, err)
			}
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Signer(ctx, "x509-3"); err != nil {
			t.Fatalf("after chmod 600: %v", err)
		}
	})

	t.Run("garbage refused", func(t *testing.T) {
		for name, body := range map[string]string{
			"empty":     "",
			"not-pem":   "hello",
			"cert-only": "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
			"encrypted": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
		} {
			if err := os.WriteFile(filepath.Join(dir, name+".key"), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := d.Signer(ctx, name)
			if err == nil || errors.Is(err, keys.ErrNotFound) || !strings.Contains(err.Error(), name+".key") {
				t.Errorf("%s: got %v, want an error naming the file", name, err)
			}
		}
	})

	t.Run("writable directory refused", func(t *testing.T) {
		open := t.TempDir()
		if err := os.Chmod(open, 0o777); err != nil {
			t.Fatal(err)
		}
		_, err := keys.NewDisk(open)
		if err == nil || !strings.Contains(err.Error(), "chmod 700") {
			t.Fatalf("got %v, want a chmod 700 hint", err)
		}
	})
}

func TestPKCS11BadConfig(t *testing.T) {
	ctx := context.Background()
	uri := hsmtest.Token(t)
	tests := []struct {
		name, uri, want string
	}{
		{name: "empty", uri: "", want: "empty uri"},
		{name: "wrong scheme", uri: "pkcs11x:token=a?pin-value=s3cret", want: `must start with "pkcs11:"`},
		{name: "malformed", uri: "pkcs11:token=a%zz?pin-value=s3cret", want: "REDACTED"},
		{name: "bad slot", uri: "pkcs11:slot-id=abc?pin-value=s3cret", want: "slot-id"},
		{name: "no module", uri: "pkcs11:module-path=/nonexistent/lib.so;token=sigil-test?pin-value=1234", want: "open token"},
		{name: "wrong token", uri: strings.Replace(uri, "token=sigil-test", "token=nope", 1), want: "open token"},
		{name: "wrong pin", uri: strings.Replace(uri, "pin-value=1234", "pin-value=9999", 1), want: "open token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := keys.NewPKCS11(ctx, keys.PKCS11Config{URI: tt.uri})
			if err == nil {
				p.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want it to mention %q", err, tt.want)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "1234") {
				t.Fatalf("error leaks the pin: %v", err)
			}
		})
	}
}
