package upstream_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/hsmtest"
)

// managers open a key store and, with reopen, the same store afresh.
var managers = []struct {
	name string
	open func(t *testing.T) (m keys.Manager, reopen func() keys.Manager)
}{
	{name: "memory", open: func(t *testing.T) (keys.Manager, func() keys.Manager) {
		m := keys.NewMemory()
		return m, func() keys.Manager { return m }
	}},
	{name: "disk", open: func(t *testing.T) (keys.Manager, func() keys.Manager) {
		dir := filepath.Join(t.TempDir(), "keys")
		open := func() keys.Manager {
			d, err := keys.NewDisk(dir)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		return open(), open
	}},
	{name: "pkcs11", open: func(t *testing.T) (keys.Manager, func() keys.Manager) {
		uri := hsmtest.Token(t)
		open := func() *keys.PKCS11 {
			p, err := keys.NewPKCS11(context.Background(), keys.PKCS11Config{URI: uri})
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		cur := open()
		t.Cleanup(func() { cur.Close() })
		return cur, func() keys.Manager {
			if err := cur.Close(); err != nil {
				t.Fatal(err)
			}
			cur = open()
			return cur
		}
	}},
}

func TestSelfSigned(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	for _, m := range managers {
		t.Run(m.name, func(t *testing.T) {
			km, reopen := m.open(t)
			certPath := filepath.Join(t.TempDir(), "ca", "root.pem")
			cfg := upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: certPath, Now: clock}
			first, err := upstream.NewSelfSigned(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			roots, err := first.Roots(ctx)
			if err != nil || len(roots) != 1 {
				t.Fatalf("Roots: %v, %v", roots, err)
			}
			root := roots[0]
			switch {
			case !root.IsCA || !root.BasicConstraintsValid:
				t.Error("root is not a CA")
			case len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://example.org":
				t.Errorf("root URI SANs %v", root.URIs)
			case len(root.PermittedURIDomains) != 1 || root.PermittedURIDomains[0] != "example.org":
				t.Errorf("root URI name constraints %v", root.PermittedURIDomains)
			case root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
				t.Errorf("root key usage %v", root.KeyUsage)
			case !root.NotAfter.Equal(now.Add(upstream.DefaultRootTTL)):
				t.Errorf("root NotAfter %s, want now+8760h", root.NotAfter)
			case root.CheckSignatureFrom(root) != nil:
				t.Error("root is not self-signed")
			}
			fi, err := os.Stat(certPath)
			if err != nil || fi.Mode().Perm() != 0o644 {
				t.Fatalf("root certificate file: %v %v, want mode 0644", fi.Mode(), err)
			}

			second, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: reopen(), CertPath: certPath, Now: clock})
			if err != nil {
				t.Fatalf("reload: %v", err)
			}
			again, _ := second.Roots(ctx)
			if len(again) != 1 || !again[0].Equal(root) {
				t.Fatal("reload made a different root")
			}
			checkChain(t, second, now, 1)
		})
	}
}

func TestSelfSignedKeyTypes(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	for _, kt := range keys.Types() {
		t.Run(string(kt), func(t *testing.T) {
			ss, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{
				TrustDomain: td, Keys: keys.NewMemory(), KeyType: kt,
				CertPath: filepath.Join(t.TempDir(), "root.pem"), TTL: 48 * time.Hour,
				Now: func() time.Time { return now },
			})
			if err != nil {
				t.Fatal(err)
			}
			checkChain(t, ss, now, 1)
		})
	}
}

func TestSelfSignedRefusals(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	dir := t.TempDir()
	certPath := filepath.Join(dir, "root.pem")
	km := keys.NewMemory()
	if _, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: certPath, Now: clock}); err != nil {
		t.Fatal(err)
	}
	otherKeys := keys.NewMemory()
	if _, err := otherKeys.GenerateKey(ctx, "root", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  upstream.SelfSignedConfig
		want string
	}{
		{name: "key missing", cfg: upstream.SelfSignedConfig{TrustDomain: td, Keys: keys.NewMemory(), CertPath: certPath}, want: `has no key "root"`},
		{name: "key mismatch", cfg: upstream.SelfSignedConfig{TrustDomain: td, Keys: otherKeys, CertPath: certPath}, want: "does not match"},
		{name: "other trust domain", cfg: upstream.SelfSignedConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("other.org"), Keys: km, CertPath: certPath}, want: "not for trust domain other.org"},
		{name: "expired", cfg: upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: certPath, Now: func() time.Time { return now.Add(9000 * time.Hour) }}, want: "expired at"},
		{name: "garbage file", cfg: upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: garbage}, want: "no PEM block"},
		{name: "no trust domain", cfg: upstream.SelfSignedConfig{Keys: km, CertPath: certPath}, want: "no trust domain"},
		{name: "no keys", cfg: upstream.SelfSignedConfig{TrustDomain: td, CertPath: certPath}, want: "no key manager"},
		{name: "no path", cfg: upstream.SelfSignedConfig{TrustDomain: td, Keys: km}, want: "no certificate path"},
		{name: "bad key type", cfg: upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: certPath, KeyType: "dsa"}, want: "valid types are"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Now == nil {
				tt.cfg.Now = clock
			}
			_, err := upstream.NewSelfSigned(ctx, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			t.Log(err)
		})
	}
	// None of the refusals replaced the root or its key.
	ss, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: certPath, Now: clock})
	if err != nil {
		t.Fatalf("original root no longer loads: %v", err)
	}
	checkChain(t, ss, now, 1)
}

func TestSignCAClamp(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	ss, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{
		TrustDomain: td, Keys: keys.NewMemory(), CertPath: filepath.Join(t.TempDir(), "root.pem"),
		TTL: 10 * time.Hour, Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := ss.Roots(ctx)
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Time
	}{
		{name: "inside", ttl: 2 * time.Hour, want: now.Add(2 * time.Hour)},
		{name: "equal", ttl: 10 * time.Hour, want: roots[0].NotAfter},
		{name: "past the root", ttl: 48 * time.Hour, want: roots[0].NotAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ss.SignCA(ctx, caTemplate(now, tt.ttl), newKey(t).Public())
			if err != nil {
				t.Fatal(err)
			}
			if !chain[0].NotAfter.Equal(tt.want) {
				t.Fatalf("NotAfter %s, want %s", chain[0].NotAfter, tt.want)
			}
		})
	}
}

func TestSignCARefusals(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	ss, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{
		TrustDomain: td, Keys: keys.NewMemory(), CertPath: filepath.Join(t.TempDir(), "root.pem"),
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	pub := newKey(t).Public()
	notCA := caTemplate(now, time.Hour)
	notCA.IsCA = false
	noCertSign := caTemplate(now, time.Hour)
	noCertSign.KeyUsage = x509.KeyUsageDigitalSignature
	noNotAfter := caTemplate(now, time.Hour)
	noNotAfter.NotAfter = time.Time{}
	afterRoot := caTemplate(now.Add(9000*time.Hour), time.Hour)
	otherTD := caTemplate(now, time.Hour)
	otherTD.URIs = []*url.URL{spiffeid.RequireFromString("spiffe://evil.org/sigil/ca").URL()}
	otherTD.PermittedURIDomains = []string{"evil.org"}

	tests := []struct {
		name string
		tmpl *x509.Certificate
		pub  any
		want string
	}{
		{name: "nil template", tmpl: nil, pub: pub, want: "nil template"},
		{name: "nil key", tmpl: caTemplate(now, time.Hour), pub: nil, want: "nil public key"},
		{name: "not a CA", tmpl: notCA, pub: pub, want: "not a CA"},
		{name: "no certSign", tmpl: noCertSign, pub: pub, want: "lacks certSign"},
		{name: "no NotAfter", tmpl: noNotAfter, pub: pub, want: "no NotAfter"},
		{name: "starts after the root ends", tmpl: afterRoot, pub: pub, want: "leaves nothing"},
		{name: "outside the name constraint", tmpl: otherTD, pub: pub, want: "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ss.SignCA(ctx, tt.tmpl, tt.pub)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestSignCAConcurrent(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	ss, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{
		TrustDomain: td, Keys: keys.NewMemory(), CertPath: filepath.Join(t.TempDir(), "root.pem"),
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := ss.SignCA(ctx, caTemplate(now, time.Hour), newKey(t).Public()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestSelfSignedRootRotation walks a root through a rotation: prepared
// beside the active one, signing under it before it is active, activated,
// reloaded from CertPath in the new order, and the old one removed with
// its key.
func TestSelfSignedRootRotation(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	for _, m := range managers {
		t.Run(m.name, func(t *testing.T) {
			km, reopen := m.open(t)
			certPath := filepath.Join(t.TempDir(), "root.pem")
			cfg := upstream.SelfSignedConfig{TrustDomain: td, Keys: km, CertPath: certPath, Now: clock}
			ss, err := upstream.NewSelfSigned(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			roots, _ := ss.Roots(ctx)
			oldRoot := roots[0]
			newRoot, err := ss.PrepareRoot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if roots, _ = ss.Roots(ctx); len(roots) != 2 || !roots[0].Equal(oldRoot) || !roots[1].Equal(newRoot) {
				t.Fatalf("after prepare: roots %d, want old then new", len(roots))
			}
			// SignCA still signs under the old root; SignCAUnder under the new.
			pub := newKey(t).Public()
			chain, err := ss.SignCA(ctx, caTemplate(now, time.Hour), pub)
			if err != nil || chain[0].CheckSignatureFrom(oldRoot) != nil {
				t.Fatalf("SignCA: %v; want it under the old root", err)
			}
			chain, err = ss.SignCAUnder(ctx, newRoot, caTemplate(now, time.Hour), pub)
			if err != nil || chain[0].CheckSignatureFrom(newRoot) != nil {
				t.Fatalf("SignCAUnder: %v; want it under the new root", err)
			}
			if _, err := ss.SignCAUnder(ctx, chain[0], caTemplate(now, time.Hour), pub); !errors.Is(err, upstream.ErrUnknownRoot) {
				t.Fatalf("SignCAUnder a non-root: %v, want ErrUnknownRoot", err)
			}
			if err := ss.ActivateRoot(ctx, newRoot); err != nil {
				t.Fatal(err)
			}
			if err := ss.RemoveRoot(ctx, newRoot); err == nil {
				t.Fatal("RemoveRoot removed the active root")
			}
			// A restart loads both, the new one active.
			cfg.Keys = reopen()
			ss, err = upstream.NewSelfSigned(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if roots, _ = ss.Roots(ctx); len(roots) != 2 || !roots[0].Equal(newRoot) || !roots[1].Equal(oldRoot) {
				t.Fatalf("after restart: roots %d, want new then old", len(roots))
			}
			if chain, err = ss.SignCA(ctx, caTemplate(now, time.Hour), pub); err != nil || chain[0].CheckSignatureFrom(newRoot) != nil {
				t.Fatalf("SignCA after activation: %v; want it under the new root", err)
			}
			if err := ss.RemoveRoot(ctx, oldRoot); err != nil {
				t.Fatal(err)
			}
			if _, err := cfg.Keys.Signer(ctx, upstream.RootKeyName); !errors.Is(err, keys.ErrNotFound) {
				t.Fatalf("old root key after RemoveRoot: %v, want ErrNotFound", err)
			}
			ss, err = upstream.NewSelfSigned(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if roots, _ = ss.Roots(ctx); len(roots) != 1 || !roots[0].Equal(newRoot) {
				t.Fatalf("after removal: %d roots, want the new one alone", len(roots))
			}
		})
	}
}
