package upstream_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/testca"
)

func TestDiskChainDepths(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	tests := []struct {
		name  string
		depth int // intermediates between the root and the issuing CA, inclusive
	}{
		{name: "root-int1", depth: 1},
		{name: "root-int1-int2", depth: 2},
		{name: "root-int1-int2-int3", depth: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pki := testca.New(t, td)
			if tt.depth > 1 {
				pki = pki.Chain(t, tt.depth-1)
			}
			f := pki.WritePEM(t, t.TempDir())
			d, err := upstream.NewDisk(upstream.DiskConfig{CertFile: f.Chain, KeyFile: f.Key, BundleFile: f.Roots, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			roots, _ := d.Roots(context.Background())
			if len(roots) != 1 || !roots[0].Equal(pki.Roots()[0]) {
				t.Fatal("Roots is not the bundle file's root")
			}
			chain := checkChain(t, d, now, 1+tt.depth)
			for i, c := range pki.Certificates() {
				if !chain[1+i].Equal(c) {
					t.Fatalf("chain[%d] is not the PKI's intermediate %d", 1+i, i)
				}
			}
		})
	}
}

func TestDiskRootInCertFile(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	pki := testca.New(t, td).Chain(t, 1)
	dir := t.TempDir()
	f := pki.WritePEM(t, dir)
	withRoot := filepath.Join(dir, "chain-and-root.pem")
	if err := os.WriteFile(withRoot, pemOf(append(pki.Certificates(), pki.Roots()...)...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bundle := range []string{"", f.Roots} {
		d, err := upstream.NewDisk(upstream.DiskConfig{CertFile: withRoot, KeyFile: f.Key, BundleFile: bundle, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatalf("bundle %q: %v", bundle, err)
		}
		checkChain(t, d, now, 3) // the root is dropped from the chain
	}
}

func TestDiskClamp(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	pki := testca.New(t, td)
	// The issuing CA ends in 3h, before the 24h the CA asks for.
	pki = pki.Chain(t, 1, testca.WithValidity(now.Add(-time.Hour), now.Add(3*time.Hour)))
	f := pki.WritePEM(t, t.TempDir())
	d, err := upstream.NewDisk(upstream.DiskConfig{CertFile: f.Chain, KeyFile: f.Key, BundleFile: f.Roots, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := d.SignCA(context.Background(), caTemplate(now, 24*time.Hour), newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	if want := pki.Certificates()[0].NotAfter; !chain[0].NotAfter.Equal(want) {
		t.Fatalf("NotAfter %s, want the issuer's %s", chain[0].NotAfter, want)
	}
}

func TestDiskRefusals(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := testca.New(t, td).Chain(t, 1)
	gf := good.WritePEM(t, mkdir(t, dir, "good"))
	other := testca.New(t, td)
	of := other.WritePEM(t, mkdir(t, dir, "other"))

	// A leaf (CA=false) and its key.
	leaf := good.Issue(t, "spiffe://example.org/workload")
	leafKey, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	leafCert := write("leaf.pem", pemOf(leaf.Certificates...), 0o644)
	leafKeyFile := write("leaf.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: leafKey}), 0o600)

	// An issuing CA that expired yesterday.
	past := now.Add(-48 * time.Hour)
	expired := testca.New(t, td).Chain(t, 1, testca.WithValidity(past, past.Add(24*time.Hour)))
	ef := expired.WritePEM(t, mkdir(t, dir, "expired"))
	// An issuing CA that starts tomorrow.
	future := testca.New(t, td).Chain(t, 1, testca.WithValidity(now.Add(24*time.Hour), now.Add(48*time.Hour)))
	ff := future.WritePEM(t, mkdir(t, dir, "future"))

	// The key file readable by others.
	openKey := write("open.key", mustRead(t, gf.Key), 0o644)
	// The intermediates left out, so the chain cannot reach the root.
	issuerOnly := write("issuer-only.pem", pemOf(good.Certificates()[0]), 0o644)

	tests := []struct {
		name string
		cfg  upstream.DiskConfig
		want string
	}{
		{name: "key mismatch", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: of.Key, BundleFile: gf.Roots}, want: "does not match certificate"},
		{name: "not a CA", cfg: upstream.DiskConfig{CertFile: leafCert, KeyFile: leafKeyFile, BundleFile: gf.Roots}, want: "is not a CA certificate"},
		{name: "expired", cfg: upstream.DiskConfig{CertFile: ef.Chain, KeyFile: ef.Key, BundleFile: ef.Roots}, want: "expired at"},
		{name: "not yet valid", cfg: upstream.DiskConfig{CertFile: ff.Chain, KeyFile: ff.Key, BundleFile: ff.Roots}, want: "not valid before"},
		{name: "missing bundle", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: gf.Key}, want: "set the bundle file"},
		{name: "bundle file absent", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: gf.Key, BundleFile: filepath.Join(dir, "nope.pem")}, want: "bundle file"},
		{name: "wrong roots", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: gf.Key, BundleFile: of.Roots}, want: "does not chain to the roots"},
		{name: "intermediate missing", cfg: upstream.DiskConfig{CertFile: issuerOnly, KeyFile: gf.Key, BundleFile: gf.Roots}, want: "does not chain to the roots"},
		{name: "key readable by others", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: openKey, BundleFile: gf.Roots}, want: "chmod 600 " + openKey},
		{name: "key file absent", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: filepath.Join(dir, "nope.key"), BundleFile: gf.Roots}, want: "key file: open "},
		{name: "key file is a certificate", cfg: upstream.DiskConfig{CertFile: gf.Chain, KeyFile: write("cert-as-key.pem", mustRead(t, gf.Chain), 0o600), BundleFile: gf.Roots}, want: `cert-as-key.pem: unexpected PEM block type "CERTIFICATE", want a private key`},
		{name: "cert file garbage", cfg: upstream.DiskConfig{CertFile: write("garbage.pem", []byte("hello"), 0o644), KeyFile: gf.Key, BundleFile: gf.Roots}, want: "garbage.pem: no PEM block"},
		{name: "cert file holds a key", cfg: upstream.DiskConfig{CertFile: gf.Key, KeyFile: gf.Key, BundleFile: gf.Roots}, want: `"PRIVATE KEY", want CERTIFICATE`},
		{name: "no cert file", cfg: upstream.DiskConfig{KeyFile: gf.Key}, want: "no certificate file"},
		{name: "no key file", cfg: upstream.DiskConfig{CertFile: gf.Chain}, want: "no key file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Now = func() time.Time { return now }
			d, err := upstream.NewDisk(tt.cfg)
			if err == nil {
				t.Fatalf("accepted: %v", d)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			t.Log(err)
		})
	}

	t.Run("issuer expires later", func(t *testing.T) {
		clock := now
		d, err := upstream.NewDisk(upstream.DiskConfig{CertFile: gf.Chain, KeyFile: gf.Key, BundleFile: gf.Roots, Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		clock = good.Certificates()[0].NotAfter.Add(time.Hour)
		_, err = d.SignCA(context.Background(), caTemplate(clock, time.Hour), newKey(t).Public())
		if err == nil || !strings.Contains(err.Error(), "leaves nothing") {
			t.Fatalf("got %v, want a refusal to sign past the issuer's end", err)
		}
	})
}

func mkdir(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
