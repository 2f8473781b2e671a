package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/adminclient"
)

// caProc is one `sigil ca run` process the simulator started.
type caProc struct {
	name   string
	addr   string // node API
	admin  string // admin socket
	health string // /metrics (and /debug/pprof/ with Config.ProfileDir)
	cmd    *exec.Cmd
	out    *lockedBuffer
	done   chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // bounded: keep the start and stop writing
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startCAs starts cfg.Replicas CA processes in dir: one on SQLite, or
// several sharing cfg.PostgresDSN under one root (the first replica makes
// it, the others get a copy, as an operator would).
func startCAs(ctx context.Context, cfg Config, dir string) ([]*caProc, error) {
	var cas []*caProc
	for i := range cfg.Replicas {
		name := fmt.Sprintf("ca%d", i)
		addr, err := freeAddr()
		if err != nil {
			return cas, err
		}
		health, err := freeAddr()
		if err != nil {
			return cas, err
		}
		data := filepath.Join(dir, name)
		store := "store:\n  type: sqlite\n"
		if cfg.PostgresDSN != "" {
			store = fmt.Sprintf("store:\n  type: postgres\n  dsn: %q\n", cfg.PostgresDSN)
		}
		conf := fmt.Sprintf("trust_domain: %s\ndata_dir: %s\nserver_address: %s\nhealth_address: %s\ninstance_id: %s\n%s",
			cfg.TrustDomain, data, addr, health, name, store)
		if cfg.ProfileDir != "" {
			// Only then: a sigil from before the key exists still runs.
			conf += "pprof: true\n"
		}
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return cas, err
		}
		if i > 0 {
			for _, f := range []struct {
				name string
				mode os.FileMode
			}{{"root.crt", 0o644}, {filepath.Join("keys", "root.key"), 0o600}} {
				b, err := os.ReadFile(filepath.Join(dir, "ca0", f.name))
				if err != nil {
					return cas, fmt.Errorf("copy the root to %s: %w", name, err)
				}
				if err := os.MkdirAll(filepath.Dir(filepath.Join(data, f.name)), 0o700); err != nil {
					return cas, err
				}
				if err := os.WriteFile(filepath.Join(data, f.name), b, f.mode); err != nil {
					return cas, err
				}
			}
		}
		p := &caProc{name: name, addr: addr, health: health, admin: filepath.Join(data, "admin.sock"), out: &lockedBuffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(cfg.Sigil, "ca", "run", "--config", path)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		if err := p.cmd.Start(); err != nil {
			return cas, fmt.Errorf("start %s: %w", name, err)
		}
		go func() { _ = p.cmd.Wait(); close(p.done) }()
		cas = append(cas, p)
		if err := p.waitReady(ctx, 2*time.Minute); err != nil {
			return cas, err
		}
	}
	return cas, nil
}

// waitReady waits until the admin socket answers and the node API listens.
func (p *caProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited early:\n%s", p.name, tail(p.out.String()))
		default:
		}
		if c, err := net.DialTimeout("unix", p.admin, time.Second); err == nil {
			c.Close()
			if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s:\n%s", p.name, timeout, tail(p.out.String()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *caProc) dialAdmin(ctx context.Context) (adminv1.AdminClient, *grpc.ClientConn, error) {
	return adminclient.Dial(ctx, p.admin)
}

// stop ends the process with SIGINT, then SIGKILL after 10s.
func (p *caProc) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// procSample is a process's CPU time so far and resident set, from /proc.
type procSample struct {
	at   time.Time
	cpu  time.Duration
	rss  int64 // VmRSS
	anon int64 // RssAnon: VmRSS without the binary's and libraries' file pages
}

// sampleProc reads /proc/PID/stat (utime, stime) and /proc/PID/status
// (VmRSS).
func sampleProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("unexpected /proc/PID/stat")
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return s, errors.New("unexpected /proc/PID/stat")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	const clkTck = 100 // USER_HZ on Linux
	s.cpu = time.Duration(utime+stime) * time.Second / clkTck
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		name, rest, _ := strings.Cut(line, ":")
		var into *int64
		switch name {
		case "VmRSS":
			into = &s.rss
		case "RssAnon":
			into = &s.anon
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/status: %w", pid, err)
		}
		*into = kb * 1024
	}
	return s, nil
}
