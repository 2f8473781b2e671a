package unixsock

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestPath(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "absolute path", in: "/run/sigil/agent.sock", want: "/run/sigil/agent.sock"},
		{name: "relative path", in: "agent.sock", want: filepath.Join(wd, "agent.sock")},
		{name: "spiffe form", in: "unix:///run/sigil/agent.sock", want: "/run/sigil/agent.sock"},
		{name: "opaque relative", in: "unix:agent.sock", want: filepath.Join(wd, "agent.sock")},
		{name: "colon in a plain path", in: "./a:b.sock", want: filepath.Join(wd, "a:b.sock")},
		{name: "empty", in: "", err: "empty socket address"},
		{name: "host", in: "unix://host/agent.sock", err: "has no host"},
		{name: "no path", in: "unix://", err: "no path"},
		{name: "tcp", in: "tcp://127.0.0.1:8081", err: "not supported"},
		{name: "query", in: "unix:///a.sock?x=1", err: "query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Path(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Path(%q) = %q, %v; want error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Path(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Probe(ctx, live); err != nil {
		t.Fatalf("live socket: %v", err)
	}
	for name, p := range map[string]string{"missing": filepath.Join(dir, "none.sock"), "stale": stale, "plain file": plain, "under a file": filepath.Join(plain, "x.sock")} {
		if err := Probe(ctx, p); !errors.Is(err, ErrNotListening) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: Probe = %v, want ErrNotListening naming the path", name, err)
		}
	}
	if err := classify("/s", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}); !errors.Is(err, ErrPermission) {
		t.Errorf("EACCES: %v, want ErrPermission", err)
	}
}
