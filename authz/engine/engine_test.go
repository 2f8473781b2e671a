package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/sigilhq/sigil/authz/engine"
)

func TestDecideFailClosed(t *testing.T) {
	in := ast.MustParseTerm(`{"attributes": {"request": {"http": {"method": "GET", "path": "/x"}}}}`).Value
	tests := []struct {
		name    string
		policy  string
		allowed bool
		reason  engine.Reason
		detail  string
		status  int
	}{
		{"bool true", `allow := true`, true, engine.ReasonAllowed, "", 0},
		{"bool false", `default allow := false`, false, engine.ReasonDenied, "", 0},
		{"undefined", `allow if input.nope`, false, engine.ReasonUndefined, "undefined", 0},
		{"string result", `allow := "yes"`, false, engine.ReasonIllTyped, "type string", 0},
		{"number result", `allow := 1`, false, engine.ReasonIllTyped, "type number", 0},
		{"set result", `allow contains 1`, false, engine.ReasonIllTyped, "", 0},
		{"conflicting values", "allow := true if input.attributes\nallow := false if input.attributes", false, engine.ReasonEvalError, "", 0},
		{"conflicting function", "f(x) := 1 if x\nf(x) := 2 if x\nallow := f(true) == 1", false, engine.ReasonEvalError, "multiple outputs", 0},
		{"builtin error is undefined", `allow := (1 / 0) > 0`, false, engine.ReasonUndefined, "", 0},
		{"object without allowed", `allow := {"headers": {}}`, false, engine.ReasonIllTyped, `no "allowed"`, 0},
		{"allowed not bool", `allow := {"allowed": "true"}`, false, engine.ReasonIllTyped, "want boolean", 0},
		{"headers not object", `allow := {"allowed": true, "headers": "x"}`, false, engine.ReasonIllTyped, "headers", 0},
		{"header value not string", `allow := {"allowed": true, "headers": {"a": 1}}`, false, engine.ReasonIllTyped, "header", 0},
		{"remove not strings", `allow := {"allowed": true, "request_headers_to_remove": [1]}`, false, engine.ReasonIllTyped, "request_headers_to_remove", 0},
		{"bad http status", `allow := {"allowed": false, "http_status": 999}`, false, engine.ReasonIllTyped, "http_status", 0},
		{"http status string", `allow := {"allowed": false, "http_status": "401"}`, false, engine.ReasonIllTyped, "http_status", 0},
		{"body not string", `allow := {"allowed": false, "body": {}}`, false, engine.ReasonIllTyped, "body", 0},
		{"metadata not object", `allow := {"allowed": true, "dynamic_metadata": []}`, false, engine.ReasonIllTyped, "dynamic_metadata", 0},
		{"object deny", `allow := {"allowed": false, "http_status": 401, "body": "no"}`, false, engine.ReasonDenied, "", 401},
		{"object deny default status", `allow := {"allowed": false}`, false, engine.ReasonDenied, "", 403},
		{"object allow", `allow := {"allowed": true, "headers": {"x-a": ["1", "2"]}, "dynamic_metadata": {"n": 1}}`, true, engine.ReasonAllowed, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e, err := engine.New("")
			if err != nil {
				t.Fatal(err)
			}
			src := "package envoy.authz\n\n" + tt.policy + "\n"
			if err := e.Load(ctx, engine.Policy{Revision: "r1", Modules: map[string]string{"p.rego": src}}); err != nil {
				t.Fatalf("load: %v", err)
			}
			d := e.Decide(ctx, in)
			if d.Allowed != tt.allowed || d.Reason != tt.reason {
				t.Fatalf("decision = allowed %v reason %s (%s), want %v %s", d.Allowed, d.Reason, d.Detail, tt.allowed, tt.reason)
			}
			if !strings.Contains(d.Detail, tt.detail) {
				t.Errorf("detail %q does not mention %q", d.Detail, tt.detail)
			}
			if d.HTTPStatus != tt.status {
				t.Errorf("http status = %d, want %d", d.HTTPStatus, tt.status)
			}
			if d.Revision != "r1" {
				t.Errorf("revision = %q", d.Revision)
			}
		})
	}
}

func TestNoPolicyDenies(t *testing.T) {
	e, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(context.Background(), ast.NewObject())
	if d.Allowed || d.Reason != engine.ReasonNoPolicy {
		t.Fatalf("decision without policy = %+v", d)
	}
}

func TestBrokenPolicyKeepsLastGood(t *testing.T) {
	ctx := context.Background()
	e, err := engine.New("envoy/authz/allow")
	if err != nil {
		t.Fatal(err)
	}
	good := engine.Policy{Revision: "good", Modules: map[string]string{"p.rego": "package envoy.authz\nallow := true\n"}}
	if err := e.Load(ctx, good); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{
		"syntax":      "package envoy.authz\nallow := ",
		"unsafe var":  "package envoy.authz\nallow if x > 1\n",
		"type error":  "package envoy.authz\nallow if count(1)\n",
		"v0 keywords": "package envoy.authz\nallow { true }\n",
	} {
		if err := e.Load(ctx, engine.Policy{Revision: name, Modules: map[string]string{"p.rego": src}}); err == nil {
			t.Errorf("%s: broken policy accepted", name)
		}
	}
	if d := e.Decide(ctx, ast.NewObject()); !d.Allowed || d.Revision != "good" {
		t.Fatalf("after refused loads: %+v", d)
	}
}

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "data.envoy.authz.allow"},
		{"envoy/authz/allow", "data.envoy.authz.allow"},
		{"/a/b/", "data.a.b"},
		{"data.x.y", "data.x.y"},
		{"data.x[_]", ""},
		{"data.x[", ""},
	}
	for _, tt := range tests {
		got, err := engine.NormalizePath(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("NormalizePath(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
