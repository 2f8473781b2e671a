package hsmtest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/internal/hsmtest"
)

func TestToken(t *testing.T) {
	uri := hsmtest.Token(t)
	if !strings.HasPrefix(uri, "pkcs11:module-path=") || !strings.Contains(uri, "token=sigil-test") || !strings.HasSuffix(uri, "?pin-value=1234") {
		t.Fatalf("unexpected uri %q", uri)
	}
	conf := os.Getenv("SOFTHSM2_CONF")
	if conf == "" {
		t.Fatal("SOFTHSM2_CONF not set")
	}
	out, err := exec.Command("softhsm2-util", "--show-slots").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --show-slots: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "sigil-test") {
		t.Fatalf("the new token is not listed:\n%s", out)
	}
	// A second token in the same test process starts empty again.
	second := hsmtest.Token(t)
	if second != uri || os.Getenv("SOFTHSM2_CONF") == conf {
		t.Fatalf("second token reused the first one's configuration")
	}
}

func TestModuleOverride(t *testing.T) {
	t.Setenv(hsmtest.ModuleEnv, hsmtest.Module(t))
	if got := hsmtest.Module(t); got != os.Getenv(hsmtest.ModuleEnv) {
		t.Fatalf("got %q, want the %s override", got, hsmtest.ModuleEnv)
	}
}
