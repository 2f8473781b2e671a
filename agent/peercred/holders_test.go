package peercred_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/peercred"
)

func TestSoleHolder(t *testing.T) {
	for _, tc := range []struct {
		name       string
		share      string // SIGIL_PEERCRED_SHARE
		wantShared bool
		wantInErr  string
	}{
		{"alone", "", false, ""},
		{"child holds it too", "keep", true, "holds the connection"},
		{"handed to a child", "handoff", true, "does not hold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var env []string
			if tc.share != "" {
				env = []string{"SIGIL_PEERCRED_SHARE=" + tc.share}
			}
			p := startPeerEnv(t, env)
			err := p.Info.SoleHolder(t.Context(), 0)
			if !tc.wantShared {
				if err != nil {
					t.Fatalf("SoleHolder = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, peercred.ErrShared) || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("SoleHolder = %v, want ErrShared saying %q", err, tc.wantInErr)
			}
			if tc.share == "keep" {
				child := strings.TrimPrefix(p.Line, "ok ")
				if !strings.Contains(err.Error(), "pid "+child+" holds") {
					t.Fatalf("SoleHolder = %v, want it to name the child %s", err, child)
				}
			}
		})
	}
}

// A connection opened and held by this (multi-threaded) process: the
// threads share one descriptor table and count as one holder.
func TestSoleHolderSelf(t *testing.T) {
	c, raw := unixPair(t, t.TempDir())
	conn, ai, err := peercred.NewCredentials().ServerHandshake(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	info := ai.(peercred.Info)
	if info.PID != int32(os.Getpid()) {
		t.Fatalf("PID = %d, want %d", info.PID, os.Getpid())
	}
	if err := info.SoleHolder(t.Context(), 0); err != nil {
		t.Fatalf("SoleHolder = %v", err)
	}
	// The client end closed: nobody holds it.
	c.Close()
	if err := info.SoleHolder(t.Context(), 0); !errors.Is(err, peercred.ErrShared) {
		t.Fatalf("SoleHolder after the client closed = %v, want ErrShared", err)
	}
}

// What cannot be determined is an error, never a nil (sole holder) answer.
func TestSoleHolderUndetermined(t *testing.T) {
	p := startPeer(t)
	if err := p.Info.SoleHolder(t.Context(), 0); err != nil {
		t.Fatalf("SoleHolder = %v", err)
	}
	t.Run("budget", func(t *testing.T) {
		err := p.Info.SoleHolder(t.Context(), 3)
		if err == nil || errors.Is(err, peercred.ErrShared) || !strings.Contains(err.Error(), "too many") {
			t.Fatalf("SoleHolder with a budget of 3 = %v, want too many", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := p.Info.SoleHolder(ctx, 0); err == nil || errors.Is(err, peercred.ErrShared) {
			t.Fatalf("SoleHolder with a cancelled context = %v", err)
		}
	})
	t.Run("zero info", func(t *testing.T) {
		if err := (peercred.Info{PID: 1}).SoleHolder(t.Context(), 0); err == nil {
			t.Fatal("SoleHolder of a zero Info succeeded")
		}
	})
}

// A /proc the scan cannot read is an error, not a sole holder.
func TestSoleHolderUnreadableProc(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	pid := strconv.Itoa(os.Getpid())
	if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
		t.Fatal(err)
	}
	// task is a file, not a directory: ENOTDIR.
	if err := os.WriteFile(filepath.Join(proc, pid, "task"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, raw := unixPair(t, dir)
	conn, ai, err := peercred.NewCredentials(peercred.WithProcDir(proc)).ServerHandshake(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = ai.(peercred.Info).SoleHolder(t.Context(), 0)
	if err == nil || errors.Is(err, peercred.ErrShared) || !strings.Contains(err.Error(), "threads of pid") {
		t.Fatalf("SoleHolder with an unreadable proc = %v, want an error that is not ErrShared", err)
	}
}

// unixPair connects this process to itself over a unix socket in dir and
// returns the client and the accepted server end; the test's cleanup closes
// everything.
func unixPair(t *testing.T, dir string) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return c, raw
}
