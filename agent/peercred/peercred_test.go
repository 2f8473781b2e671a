package peercred_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/peercred"
)

// The test binary doubles as a peer: with SIGIL_PEERCRED_CONNECT set it
// connects to that socket, says "ok" on stdout and waits for stdin to close.
// With SIGIL_PEERCRED_SHARE=keep it first starts a child that holds the
// connection too (as fd 3, until its stdin closes) and says "ok <child
// pid>"; with SIGIL_PEERCRED_SHARE=handoff it also closes its own copy.
func TestMain(m *testing.M) {
	if os.Getenv("SIGIL_PEERCRED_HOLD") != "" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	if sock := os.Getenv("SIGIL_PEERCRED_CONNECT"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			os.Stdout.WriteString("dial: " + err.Error() + "\n")
			os.Exit(2)
		}
		if share := os.Getenv("SIGIL_PEERCRED_SHARE"); share != "" {
			pid, err := shareConn(c, share == "handoff")
			if err != nil {
				os.Stdout.WriteString("share: " + err.Error() + "\n")
				os.Exit(2)
			}
			os.Stdout.WriteString("ok " + strconv.Itoa(pid) + "\n")
		} else {
			os.Stdout.WriteString("ok\n")
		}
		_, _ = io.Copy(io.Discard, os.Stdin)
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// shareConn starts a child of this binary holding a copy of c; with
// handoff, c is closed here.
func shareConn(c net.Conn, handoff bool) (int, error) {
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "SIGIL_PEERCRED_HOLD=1")
	cmd.Stdin = os.Stdin // ends when the test closes our stdin
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if handoff {
		c.Close()
	}
	return cmd.Process.Pid, nil
}

// peer is a child process connected to a listener, and the server side of
// its connection after the peercred handshake.
type peer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	conn  net.Conn
	info  peercred.Info
	line  string // what the peer said: "ok" or "ok <child pid>"
}

// worldDir is a temporary directory every user can enter, holding a copy of
// the test binary every user can run.
func worldDir(t *testing.T) (dir, exe string) {
	t.Helper()
	dir = t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "peer.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, exe
}

func startPeer(t *testing.T, argv ...string) *peer {
	t.Helper()
	return startPeerEnv(t, nil, argv...)
}

// startPeerEnv is startPeer with extra environment for the peer.
func startPeerEnv(t *testing.T, env []string, argv ...string) *peer {
	t.Helper()
	dir, exe := worldDir(t)
	sock := filepath.Join(dir, "s.sock")
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
	cmd.Env = append(append(os.Environ(), "SIGIL_PEERCRED_CONNECT="+sock), env...)
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
		t.Fatalf("start %v: %v", argv, err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
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
	return &peer{cmd: cmd, stdin: stdin, conn: conn, info: info, line: strings.TrimSpace(line)}
}

func TestHandshake(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv not found: install util-linux (apt-get install util-linux)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test switches uid with setpriv and must run as root (hack/test.sh runs as root in CI)")
	}
	for _, tc := range []struct {
		name     string
		argv     []string
		uid, gid uint32
	}{
		{"root", nil, 0, 0},
		{"nobody", []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}, 65534, 65534},
		{"mixed", []string{setpriv, "--reuid=1234", "--regid=4321", "--clear-groups"}, 1234, 4321},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPeer(t, tc.argv...)
			if p.info.PID != int32(p.cmd.Process.Pid) {
				t.Errorf("PID = %d, want %d", p.info.PID, p.cmd.Process.Pid)
			}
			if p.info.UID != tc.uid || p.info.GID != tc.gid {
				t.Errorf("UID, GID = %d, %d, want %d, %d", p.info.UID, p.info.GID, tc.uid, tc.gid)
			}
			if p.info.AuthType() != "peercred" {
				t.Errorf("AuthType = %q", p.info.AuthType())
			}
			if err := p.info.Check(); err != nil {
				t.Errorf("Check on a live peer: %v", err)
			}
		})
	}
}

func TestCheckAfterExit(t *testing.T) {
	p := startPeer(t)
	if err := p.info.Check(); err != nil {
		t.Fatalf("Check on a live peer: %v", err)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait() // reaped: its PID may now be reused
	err := p.info.Check()
	if !errors.Is(err, peercred.ErrExited) {
		t.Fatalf("Check after exit = %v, want ErrExited", err)
	}
	p.conn.Close()
	if err := p.info.Check(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Check after close = %v, want connection closed", err)
	}
}

func TestCheckAfterClose(t *testing.T) {
	p := startPeer(t)
	p.conn.Close()
	if err := p.info.Check(); err == nil {
		t.Fatal("Check after the connection closed succeeded")
	}
}

func TestHandshakeRejects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1))
		}
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, _, err := peercred.NewCredentials().ServerHandshake(raw); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
		t.Fatalf("handshake on tcp = %v, want not a unix socket", err)
	}
	if _, _, err := peercred.NewCredentials().ClientHandshake(t.Context(), "x", raw); err == nil {
		t.Fatal("client handshake succeeded")
	}
}

func TestZeroInfo(t *testing.T) {
	if err := (peercred.Info{}).Check(); err == nil {
		t.Fatal("Check on a zero Info succeeded")
	}
	ctx := peercred.NewContext(t.Context(), peercred.Info{PID: 7, UID: 8})
	info, ok := peercred.FromContext(ctx)
	if !ok || info.PID != 7 || info.UID != 8 {
		t.Fatalf("FromContext = %+v, %v", info, ok)
	}
	if _, ok := peercred.FromContext(t.Context()); ok {
		t.Fatal("FromContext without a peer succeeded")
	}
}
