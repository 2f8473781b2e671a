package hsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Label, PIN and SOPIN of every token Token makes.
const (
	Label = "sigil-test"
	PIN   = "1234"
	SOPIN = "5678"
)

// ModuleEnv names the environment variable that overrides where the SoftHSM2
// PKCS#11 module is.
const ModuleEnv = "SIGIL_SOFTHSM_MODULE"

// modulePaths are where Debian and Ubuntu put libsofthsm2.so.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

const missing = "SoftHSM2 not found: run hack/test.sh (installs Debian's softhsm2) or set " + ModuleEnv

// Module returns the path of the SoftHSM2 PKCS#11 module, failing t if
// there is none.
func Module(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(ModuleEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s (%s=%s: %v)", missing, ModuleEnv, p, err)
		}
		return p
	}
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s (looked in %v)", missing, modulePaths)
	return ""
}

// Token makes a fresh SoftHSM2 token in t.TempDir(), points SOFTHSM2_CONF
// at it for the rest of the test (so the test must not be parallel), and
// returns the PKCS#11 URI that opens it with its PIN, e.g.
// "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=sigil-test?pin-value=1234".
//
// SoftHSM2 reads SOFTHSM2_CONF when the module is first initialized, so
// every handle on an earlier token must be closed before calling Token again
// in the same process.
func Token(t testing.TB) (uri string) {
	t.Helper()
	module := Module(t)
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Fatalf("%s (softhsm2-util is not on PATH)", missing)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	cmd := exec.Command(util, "--init-token", "--free", "--label", Label, "--pin", PIN, "--so-pin", SOPIN)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return "pkcs11:module-path=" + module + ";token=" + Label + "?pin-value=" + PIN
}
