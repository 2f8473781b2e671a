package policytool_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/policytool"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTestReportsFailures(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", "package envoy.authz\n\ndefault allow := false\n\nallow if input.ok\n")
	write(t, dir, "p_test.rego", "package envoy.authz_test\n\nimport data.envoy.authz\n\ntest_ok if authz.allow with input as {\"ok\": true}\n\ntest_wrong if authz.allow with input as {}\n")
	var out bytes.Buffer
	passed, err := policytool.Test(context.Background(), &out, []string{dir}, false)
	if !errors.Is(err, policytool.ErrTestsFailed) || passed != 1 {
		t.Fatalf("Test = %d, %v; want 1 passed and ErrTestsFailed", passed, err)
	}
	if !strings.Contains(out.String(), "test_wrong") {
		t.Fatalf("report does not name the failing test:\n%s", out.String())
	}
	empty := t.TempDir()
	write(t, empty, "p.rego", "package x\n\ny := 1\n")
	if _, err := policytool.Test(context.Background(), &out, []string{empty}, false); err == nil {
		t.Fatal("a directory without tests passed")
	}
}

func TestEval(t *testing.T) {
	req, err := policytool.ReadCheckRequest(filepath.Join("..", "testdata", "requests", "01-mtls-allowed-get.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Without the library the example's edges check is undefined: denied.
	d, err := policytool.Eval(context.Background(), filepath.Join("..", "..", "policies", "examples", "grpc"), "", req)
	if err != nil || d.Allowed || d.HTTPStatus != 403 {
		t.Fatalf("grpc example without the library = %+v, %v; want a 403 denial", d, err)
	}
	dir := t.TempDir()
	write(t, dir, "p.rego", "package envoy.authz\n\nallow if input.sigil.source.segments[3] == \"frontend\"\n")
	d, err = policytool.Eval(context.Background(), dir, "", req)
	if err != nil || !d.Allowed || d.Reason != engine.ReasonAllowed {
		t.Fatalf("Eval = %+v, %v", d, err)
	}
	if _, err := policytool.ReadCheckRequest(filepath.Join(dir, "p.rego")); err == nil {
		t.Fatal("rego file read as a CheckRequest")
	}
}
