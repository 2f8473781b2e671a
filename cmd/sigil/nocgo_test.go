package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPureGoBuild builds sigil with CGO_ENABLED=0 and no C compiler, as on
// a machine without one: the build works, and a CA configured for PKCS#11
// stops at start with a message that says why, instead of a build failure.
func TestPureGoBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "sigil")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "CC=/nonexistent/cc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/sigil: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		t.Fatalf("sigil version: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "ca.yaml")
	yaml := "trust_domain: example.org\ndata_dir: " + filepath.Join(dir, "ca") + "\n" +
		"key_manager:\n  type: pkcs11\n  uri: pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=sigil?pin-value=1234\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "ca", "run", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("sigil ca run with key_manager pkcs11 in a pure-Go build succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "PKCS#11 is not in this build (built without cgo): ") {
		t.Fatalf("sigil ca run: %v; want the PKCS#11 message:\n%s", err, out)
	}
	if strings.Contains(string(out), "1234") {
		t.Fatalf("the message shows the PIN:\n%s", out)
	}
}
