package peercred_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/peercred/peercredtest"
)

// The test binary doubles as a peer (peercredtest.ServePeer). With
// SIGIL_PEERCRED_SHARE=keep it first starts a child that holds the
// connection too (as fd 3, until its stdin closes) and says "ok <child
// pid>"; with SIGIL_PEERCRED_SHARE=handoff it also closes its own copy.
func TestMain(m *testing.M) {
	if os.Getenv("SIGIL_PEERCRED_HOLD") != "" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	peercredtest.ServePeer(func(c *net.UnixConn) (string, error) {
		share := os.Getenv("SIGIL_PEERCRED_SHARE")
		if share == "" {
			return "", nil
		}
		pid, err := shareConn(c, share == "handoff")
		if err != nil {
			return "", fmt.Errorf("share: %w", err)
		}
		return strconv.Itoa(pid), nil
	})
	os.Exit(m.Run())
}

// shareConn starts a child of this binary holding a copy of c; with
// handoff, c is closed here.
func shareConn(c *net.UnixConn, handoff bool) (int, error) {
	f, err := c.File()
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

func startPeer(t *testing.T, argv ...string) *peercredtest.Peer {
	t.Helper()
	return startPeerEnv(t, nil, argv...)
}

// startPeerEnv is startPeer with extra environment for the peer.
func startPeerEnv(t *testing.T, env []string, argv ...string) *peercredtest.Peer {
	t.Helper()
	dir := peercredtest.WorldDir(t)
	exe := filepath.Join(dir, "peer.test")
	peercredtest.CopySelf(t, exe, "")
	return peercredtest.Start(t, dir, exe, env, argv...)
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
			if p.Info.PID != int32(p.Cmd.Process.Pid) {
				t.Errorf("PID = %d, want %d", p.Info.PID, p.Cmd.Process.Pid)
			}
			if p.Info.UID != tc.uid || p.Info.GID != tc.gid {
				t.Errorf("UID, GID = %d, %d, want %d, %d", p.Info.UID, p.Info.GID, tc.uid, tc.gid)
			}
			if p.Info.AuthType() != "peercred" {
				t.Errorf("AuthType = %q", p.Info.AuthType())
			}
			if err := p.Info.Check(); err != nil {
				t.Errorf("Check on a live peer: %v", err)
			}
		})
	}
}

func TestCheckAfterExit(t *testing.T) {
	p := startPeer(t)
	if err := p.Info.Check(); err != nil {
		t.Fatalf("Check on a live peer: %v", err)
	}
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.Cmd.Wait() // reaped: its PID may now be reused
	err := p.Info.Check()
	if !errors.Is(err, peercred.ErrExited) {
		t.Fatalf("Check after exit = %v, want ErrExited", err)
	}
	p.Conn.Close()
	if err := p.Info.Check(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Check after close = %v, want connection closed", err)
	}
}

func TestCheckAfterClose(t *testing.T) {
	p := startPeer(t)
	p.Conn.Close()
	if err := p.Info.Check(); err == nil {
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
