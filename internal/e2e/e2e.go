package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is a built sigil binary.
type Binary struct {
	Path string
	Env  []string // added to every process's environment
	// Args go before the arguments of every Run and Start (AsUID puts
	// setpriv's options and the program here).
	Args []string
}

// Build compiles ./cmd/sigil into dir. Main calls it.
func Build(dir string) (*Binary, error) {
	out, err := BuildPackage(dir, "./cmd/sigil", "sigil")
	if err != nil {
		return nil, err
	}
	return &Binary{Path: out}, nil
}

// BuildPackage compiles the main package pkg (a path relative to the module
// root, e.g. "./hack/e2e/agent/mtlspeer") into dir/name and returns its path.
func BuildPackage(dir, pkg, name string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// SetprivPath is the path of setpriv(1), or an error saying how to fix
// it when setpriv is missing or the process is not root (only root can run
// workloads as other uids).
func SetprivPath() (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("this suite runs workloads as several uids through setpriv and must run as root (sudo go test ./hack/e2e/...; hack/test.sh runs as root in CI); euid is %d", os.Geteuid())
	}
	p, err := exec.LookPath("setpriv")
	if err != nil {
		return "", fmt.Errorf("setpriv not found on PATH: install util-linux (Debian: apt-get install util-linux; hack/setup/50-setpriv.sh does it): %w", err)
	}
	return p, nil
}

// Setpriv is SetprivPath that fails the test with its how-to-fix message.
func Setpriv(t testing.TB) string {
	t.Helper()
	p, err := SetprivPath()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// AsUID is program run as uid (with gid uid and no supplementary groups)
// through setpriv. program must be executable by uid: its directory and
// every parent must be searchable by others.
func AsUID(setpriv, program string, uid int) *Binary {
	id := strconv.Itoa(uid)
	return &Binary{Path: setpriv, Args: []string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--", program}}
}

func (b *Binary) argv(args []string) []string {
	return append(slices.Clone(b.Args), args...)
}

// Run runs sigil to completion with a timeout and returns its output.
func (b *Binary) Run(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.Path, b.argv(args)...)
	cmd.Env = append(os.Environ(), b.Env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// MustRun is Run that fails the test on error.
func (b *Binary) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := b.Run(t, args...)
	if err != nil {
		t.Fatalf("sigil %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// Proc is a long-running sigil process.
type Proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Pid is the process's ID (to read /proc/PID/status, say).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Start starts sigil in the background; the test's cleanup kills it if the
// test did not stop it.
func (b *Binary) Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	p := &Proc{done: make(chan struct{})}
	p.cmd = exec.Command(b.Path, b.argv(args)...)
	p.cmd.Env = append(os.Environ(), b.Env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sigil %s: %v", strings.Join(args, " "), err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of sigil %s:\n%s", strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// Interrupt sends SIGINT (Ctrl-C) and waits up to timeout for the process to
// exit, returning how long it took and its exit error.
func (p *Proc) Interrupt(t testing.TB, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("interrupt: %v", err)
	}
	select {
	case <-p.done:
		return time.Since(start), p.err
	case <-time.After(timeout):
		t.Fatalf("sigil did not stop within %s of SIGINT", timeout)
		return 0, nil
	}
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit error.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s\n%s", timeout, p.Output())
		return nil
	}
}

// WaitForOutput waits until the process has printed substr.
func (p *Proc) WaitForOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), substr) {
			return
		}
		if p.Exited() {
			t.Fatalf("process exited (%v) before printing %q:\n%s", p.err, substr, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process did not print %q within %s:\n%s", substr, timeout, p.Output())
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitForSocket waits until a unix socket accepts connections.
func WaitForSocket(t testing.TB, p *Proc, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && p.Exited() {
			t.Fatalf("sigil exited before %s was ready: %v\n%s", path, p.err, p.Output())
		}
		if c, err := net.DialTimeout("unix", path, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s", path, timeout)
}

// Kill ends the process with SIGKILL (no clean shutdown, as a crash or
// kill -9) and waits for it to exit.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	<-p.done
}
