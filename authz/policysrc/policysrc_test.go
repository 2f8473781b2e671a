package policysrc_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/policysrc"
)

const policy = "package envoy.authz\n\nallow if data.allowed[input.who]\n"

func makeBundle(t *testing.T, revision string) []byte {
	t.Helper()
	var buf bytes.Buffer
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision},
		Modules:  []bundle.ModuleFile{{Path: "/authz/policy.rego", URL: "/authz/policy.rego", Raw: []byte(policy)}},
		Data:     map[string]any{"allowed": map[string]any{"alice": true}},
	}
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func check(t *testing.T, p engine.Policy) {
	t.Helper()
	if _, err := engine.Prepare(context.Background(), p, ""); err != nil {
		t.Fatalf("policy from source does not prepare: %v", err)
	}
	if len(p.Modules) != 1 || p.Data["allowed"] == nil {
		t.Fatalf("policy = %+v", p)
	}
}

func TestDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("policy.rego", policy)
	write("policy_test.rego", "package envoy.authz_test\ntest_x if true\n")
	write(".hidden/evil.rego", "package x\nallow := true\n")
	write("data.json", `{"allowed": {"alice": true}}`)
	src := policysrc.Dir{Path: dir}
	p1, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check(t, p1)
	p2, _ := src.Load(context.Background())
	if p1.Revision != p2.Revision {
		t.Fatalf("revision not stable: %s vs %s", p1.Revision, p2.Revision)
	}
	write("data.json", `{"allowed": {"bob": true}}`)
	p3, _ := src.Load(context.Background())
	if p3.Revision == p1.Revision {
		t.Fatal("data change did not change the revision")
	}
	if _, err := (policysrc.Dir{Path: filepath.Join(dir, "missing")}).Load(context.Background()); err == nil {
		t.Fatal("missing directory loaded")
	}
}

func TestBundleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(path, makeBundle(t, "v7"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := policysrc.BundleFile{Path: path}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check(t, p)
	if p.Revision != "v7" {
		t.Fatalf("revision = %q, want the manifest's", p.Revision)
	}
	if err := os.WriteFile(path, []byte("not a bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (policysrc.BundleFile{Path: path}).Load(context.Background()); err == nil {
		t.Fatal("garbage bundle loaded")
	}
}

func TestBundleHTTP(t *testing.T) {
	var downloads atomic.Int32
	body := makeBundle(t, "r1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bundles/authz.tar.gz" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("If-None-Match") == `"r1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		downloads.Add(1)
		w.Header().Set("ETag", `"r1"`)
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	src := &policysrc.BundleHTTP{URL: srv.URL + "/bundles/authz.tar.gz", Client: srv.Client()}
	p, err := src.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check(t, p)
	if _, err := src.Load(context.Background()); !errors.Is(err, policysrc.ErrNotModified) {
		t.Fatalf("second load = %v, want ErrNotModified", err)
	}
	if downloads.Load() != 1 {
		t.Fatalf("bundle downloaded %d times", downloads.Load())
	}
	missing := &policysrc.BundleHTTP{URL: srv.URL + "/nope", Client: srv.Client()}
	if _, err := missing.Load(context.Background()); err == nil {
		t.Fatal("404 loaded")
	}
	small := &policysrc.BundleHTTP{URL: srv.URL + "/bundles/authz.tar.gz", Client: srv.Client(), MaxBytes: 10}
	if _, err := small.Load(context.Background()); err == nil {
		t.Fatal("oversized bundle loaded")
	}
}
