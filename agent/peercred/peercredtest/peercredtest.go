package peercredtest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/peercred"
)

// ConnectEnv names the socket that a peer started by Start dials.
const ConnectEnv = "SIGIL_PEERCRED_CONNECT"

// ServePeer, called first in TestMain, turns the process into a peer when
// Start launched it: it dials the socket, runs extra (nil: nothing) on the
// connection, says "ok" (followed by what extra returned, when not empty)
// on stdout, waits for stdin to close and exits. In any other process it
// returns at once.
func ServePeer(extra func(*net.UnixConn) (string, error)) {
	sock := os.Getenv(ConnectEnv)
	if sock == "" {
		return
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		os.Stdout.WriteString("dial: " + err.Error() + "\n")
		os.Exit(2)
	}
	say := "ok"
	if extra != nil {
		more, err := extra(c.(*net.UnixConn))
		if err != nil {
			os.Stdout.WriteString("peer: " + err.Error() + "\n")
			os.Exit(2)
		}
		if more != "" {
			say += " " + more
		}
	}
	os.Stdout.WriteString(say + "\n")
	_, _ = io.Copy(io.Discard, os.Stdin)
	c.Close()
	os.Exit(0)
}

// WorldDir is a temporary directory every user can enter.
func WorldDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// WriteExe writes b to path (mode 0755, renamed into place) and returns
// its sha256.
func WriteExe(t testing.TB, path string, b []byte) string {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// CopySelf copies the test binary to path, every user may run it, with
// extra appended so that copies differ in content; it returns the sha256.
func CopySelf(t testing.TB, path, extra string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	return WriteExe(t, path, append(b, extra...))
}

// Peer is a child process connected to a listener, and the server side of
// its connection after the peercred handshake. The test's cleanup closes
// both.
type Peer struct {
	Cmd  *exec.Cmd
	Conn net.Conn
	Info peercred.Info
	Line string // what the peer said: "ok" or "ok <what extra returned>"
}

// Start runs exe (a copy of the test binary, through the wrapper argv such
// as setpriv, with env added to its environment) connected to a fresh
// socket in dir, and returns it once the server side has its credentials.
func Start(t testing.TB, dir, exe string, env []string, argv ...string) *Peer {
	t.Helper()
	f, err := os.CreateTemp(dir, "*.sock")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	sock := f.Name()
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	argv = append(argv, exe)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), ConnectEnv+"="+sock), env...)
	line, err := StartPiped(t, cmd).ReadString('\n')
	if !strings.HasPrefix(line, "ok") {
		t.Fatalf("peer %v: %q %v", argv, line, err)
	}
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn, ai, err := peercred.NewCredentials().ServerHandshake(raw)
	if err != nil {
		raw.Close()
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	info, ok := ai.(peercred.Info)
	if !ok {
		t.Fatalf("auth info is %T", ai)
	}
	return &Peer{Cmd: cmd, Conn: conn, Info: info, Line: strings.TrimSpace(line)}
}

// StartPiped starts cmd with its stdout returned and its stderr the test's;
// when the test ends its stdin closes (a peer's signal to exit) and it is
// killed and reaped.
func StartPiped(t testing.TB, cmd *exec.Cmd) *bufio.Reader {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return bufio.NewReader(stdout)
}
