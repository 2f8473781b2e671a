package explain_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/explain"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/policies"
)

// seeded writes the policies package's lib and one example into a
// directory and prepares an explainer for it, as authz would load it.
func seeded(t *testing.T, example string) *explain.Explainer {
	t.Helper()
	x, err := explain.New(context.Background(), policyOf(t, example), "", input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// policyOf loads lib and one example the way authz loads a directory.
func policyOf(t testing.TB, example string) engine.Policy {
	t.Helper()
	dir := t.TempDir()
	for _, root := range []string{"lib", example} {
		err := fs.WalkDir(policies.FS(), root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || policysrc.IsTestFile(p) || strings.HasSuffix(p, ".md") {
				return err
			}
			raw, err := fs.ReadFile(policies.FS(), p)
			if err != nil {
				return err
			}
			// The example's files sit at the top, as `sigil dev` seeds them:
			// data.json's documents are rooted at their directory.
			to := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p, example+"/")))
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			return os.WriteFile(to, raw, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	p, err := policysrc.Dir{Path: dir}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func request(src, dst, method, path string, port uint32) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: src},
		Destination: &authv3.AttributeContext_Peer{Principal: dst, Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}},
		Request:     &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "cart"}},
	}}
}

const (
	frontend = "spiffe://example.org/ns/shop/sa/frontend"
	cart     = "spiffe://example.org/ns/shop/sa/cart"
)

func TestExplainShop(t *testing.T) {
	x := seeded(t, "examples/shop")
	ctx := context.Background()
	t.Run("allowed names the allow rule", func(t *testing.T) {
		ex := x.Explain(ctx, request(frontend, cart, "GET", "/items/7", 8080))
		if ex.Result != "allow" || len(ex.DecidedBy) != 1 {
			t.Fatalf("want allow decided by one rule, got %s by %+v", ex.Result, ex.DecidedBy)
		}
		if got := ex.DecidedBy[0]; got.Name != "data.envoy.authz.allow" || got.Default || got.Text != "allow if mesh.allow" || got.File != "policy.rego" || got.Line != 9 {
			t.Errorf("decided by %+v, want policy.rego:9 allow if mesh.allow", got)
		}
		if !hasRule(ex.Matched, "data.sigil.mesh.admits") || !hasRule(ex.Matched, "data.sigil.mesh.method_ok") {
			t.Errorf("matched rules %+v lack mesh.admits and mesh.method_ok", ex.Matched)
		}
		if len(ex.Closest) != 0 {
			t.Errorf("an allowed request has closest misses: %+v", ex.Closest)
		}
	})
	t.Run("denied by default names the missing method", func(t *testing.T) {
		ex := x.Explain(ctx, request(frontend, cart, "DELETE", "/items/7", 8080))
		if ex.Result != "deny" || ex.Reason != "denied" {
			t.Fatalf("want deny, got %s (%s)", ex.Result, ex.Reason)
		}
		if len(ex.DecidedBy) != 1 || !ex.DecidedBy[0].Default || ex.DecidedBy[0].Text != "default allow := false" {
			t.Errorf("decided by %+v, want the default rule", ex.DecidedBy)
		}
		if len(ex.Closest) == 0 {
			t.Fatal("no closest miss")
		}
		f := ex.Closest[0]
		if f.Expr != "method in edge.methods" || f.Rule != "data.sigil.mesh.method_ok" || f.File != "lib/sigil/mesh.rego" {
			t.Errorf("closest miss %+v, want method in edge.methods in mesh.method_ok", f)
		}
		if f.Bindings["operand 1"] != `"DELETE"` || f.Bindings["operand 2"] != `["GET"]` || !strings.Contains(f.Bindings["edge"], `"methods": ["GET"]`) {
			t.Errorf("closest miss values %v, want the method, the edge's methods and the edge", f.Bindings)
		}
		if want := "data.envoy.authz.allow"; len(f.Chain) == 0 || f.Chain[0] != want {
			t.Errorf("chain %v does not start at %s", f.Chain, want)
		}
	})
	t.Run("wrong caller misses on the source id", func(t *testing.T) {
		ex := x.Explain(ctx, request(cart, frontend, "GET", "/items", 8080))
		if ex.Result != "deny" || len(ex.Closest) == 0 {
			t.Fatalf("want deny with a closest miss, got %s %+v", ex.Result, ex.Closest)
		}
		for _, f := range ex.Closest {
			if f.Rule != "data.sigil.mesh.matches_id" {
				t.Errorf("closest miss %+v, want one in mesh.matches_id", f)
			}
		}
	})
	t.Run("text output", func(t *testing.T) {
		var b strings.Builder
		if err := x.Explain(ctx, request(frontend, cart, "DELETE", "/items/7", 8080)).Write(&b); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"DENY (denied)", "policy.rego:7  default allow := false", "lib/sigil/mesh.rego:56  method in edge.methods  is false"} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("text lacks %q:\n%s", want, b.String())
			}
		}
	})
}

// The demo policy denies with an object from a rule of its own: that rule,
// not the default, decided.
func TestExplainDemoObjectDenial(t *testing.T) {
	x := seeded(t, "examples/demo")
	ex := x.Explain(context.Background(), request("spiffe://example.org/ns/demo/sa/frontend", "spiffe://example.org/ns/demo/sa/backend", "POST", "/api/items", 8080))
	if ex.Result != "deny" {
		t.Fatalf("want deny, got %s", ex.Result)
	}
	if len(ex.DecidedBy) != 1 || ex.DecidedBy[0].Default || ex.DecidedBy[0].Line != 18 {
		t.Errorf("decided by %+v, want the non-default allow rule at policy.rego:18", ex.DecidedBy)
	}
	if len(ex.Closest) == 0 || ex.Closest[0].Expr != "method in edge.methods" {
		t.Errorf("closest %+v, want method in edge.methods", ex.Closest)
	}
	b, _ := json.Marshal(ex)
	if !strings.Contains(string(b), `"decided_by":[{"name":"data.envoy.authz.allow"`) {
		t.Errorf("json %s", b)
	}
}

func TestExplainBadPolicyPath(t *testing.T) {
	if _, err := explain.New(context.Background(), policyOf(t, "examples/shop"), "data.envoy.authz[x]", input.Options{}); err == nil {
		t.Fatal("a non-ground decision path was accepted")
	}
}

func hasRule(rs []explain.Rule, name string) bool {
	for _, r := range rs {
		if r.Name == name {
			return true
		}
	}
	return false
}

func BenchmarkExplainDenied(b *testing.B) {
	x, err := explain.New(context.Background(), policyOf(b, "examples/shop"), "", input.Options{})
	if err != nil {
		b.Fatal(err)
	}
	req := request(frontend, cart, "DELETE", "/items/7", 8080)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ex := x.Explain(ctx, req); len(ex.Closest) == 0 {
			b.Fatal("no closest miss")
		}
	}
}
