package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SPIREVersion is the SPIRE release the suites that run a real SPIRE
// beside Sigil expect (hack/setup/62-spire.sh builds it).
const SPIREVersion = "v1.14.5"

// SPIREHowTo says how to get SPIRE when a suite cannot find it.
const SPIREHowTo = "SPIRE " + SPIREVersion + " is needed: run hack/setup/62-spire.sh (builds spire-server and spire-agent " +
	"into ~/.cache/sigil/tools, minutes cold) or put them on PATH"

// SPIRETool finds spire-server or spire-agent on PATH or in the setup
// script's cache and checks its version; it fails t, saying how to get
// it, when there is none.
func SPIRETool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		dir, derr := os.UserCacheDir()
		if derr != nil {
			t.Fatalf("%s not found: %v. %s", name, derr, SPIREHowTo)
		}
		p = filepath.Join(dir, "sigil", "tools", name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not found on PATH nor at %s. %s", name, p, SPIREHowTo)
		}
	}
	out, _ := exec.Command(p, "--version").CombinedOutput()
	if !strings.Contains(string(out), strings.TrimPrefix(SPIREVersion, "v")) {
		t.Fatalf("%s --version printed %q, want %s. %s", p, out, SPIREVersion, SPIREHowTo)
	}
	return p
}
