package e2e

import (
	"fmt"
	"net"
	"os"
	"testing"
)

// Main is a suite's whole TestMain: it builds sigil into a fresh directory
// (mode 0755, so that workloads of other uids can execute from it), hands
// the binary and the directory to setup (which keeps the binary and may
// build more into the directory), runs the tests, removes the directory and exits with the
// tests' code. An error before the tests exits 1 and says why.
func Main(m *testing.M, suite string, setup func(sigil *Binary, dir string) error) {
	os.Exit(runSuite(m, suite, setup))
}

func runSuite(m *testing.M, suite string, setup func(*Binary, string) error) int {
	dir, err := os.MkdirTemp("", "sigil-e2e-"+suite+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := prepare(dir, setup); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	return m.Run()
}

func prepare(dir string, setup func(*Binary, string) error) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	bin, err := Build(dir)
	if err != nil {
		return err
	}
	return setup(bin, dir)
}

// FreeAddr is a 127.0.0.1 TCP address that was free a moment ago, for a
// process that must be told its address before it starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WriteFile writes data to path with mode or fails the test.
func WriteFile(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}
