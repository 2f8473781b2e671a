package dev

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestREADMECommands runs the README's first command exactly as written
// (with HOME pointed at a temp dir so the default state dir is fresh) and
// checks the second one is there to run.
func TestREADMECommands(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	inBlock := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			if inBlock {
				break
			}
			inBlock = true
			continue
		}
		if inBlock {
			cmd, _, _ := strings.Cut(line, "#")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cmds = append(cmds, cmd)
			}
		}
	}
	if len(cmds) != 2 || cmds[0] != "go run ./cmd/sigil dev" || cmds[1] != "hack/test.sh" {
		t.Fatalf("README's first block holds %q, want the start and test commands", cmds)
	}
	if fi, err := os.Stat(filepath.Join(root, cmds[1])); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is not an executable file: %v", cmds[1], err)
	}
	home := t.TempDir()
	cmd := exec.Command("sh", "-c", "exec "+cmds[0])
	cmd.Dir = root
	// A fresh HOME, but Go's own caches where they are: HOME only moves
	// sigil's default state directory.
	cmd.Env = append(os.Environ(), "HOME="+home)
	// The command as written, but on ports the kernel picks, through the
	// flags' environment twins: a `sigil dev` already running here (on
	// 8443, 9988 and 9191) does not get in the way.
	for _, v := range []string{"SIGIL_SERVER_ADDRESS", "SIGIL_HEALTH_ADDRESS", "SIGIL_AUTHZ_ADDRESS"} {
		cmd.Env = append(cmd.Env, v+"=127.0.0.1:0")
	}
	for _, v := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
		val, err := exec.Command("go", "env", v).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", v, err)
		}
		cmd.Env = append(cmd.Env, v+"="+strings.TrimSpace(string(val)))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logPath := filepath.Join(t.TempDir(), "out.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile // a file: the child writes it directly
	out := outputOf(logPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when the process group leader exits
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	for _, sock := range []string{"admin.sock", "agent.sock"} {
		waitUnix(t, filepath.Join(home, ".sigil", "dev", sock), done, out)
	}
	// The banner comes once dev has made its entries, after the sockets.
	waitOutput(t, "Sigil dev is running", done, out)
	// Ctrl-C reaches the whole process group, as in a terminal.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// `go run` itself reports an interrupted run as exit status 1 whatever
	// its child did, so judge sigil by what it printed.
	select {
	case <-done:
		if !strings.Contains(out.String(), "sigil dev stopped") || strings.Contains(out.String(), "\nsigil: ") {
			t.Fatalf("%s did not stop cleanly after Ctrl-C:\n%s", cmds[0], out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop after Ctrl-C:\n%s", cmds[0], out)
	}
	if !strings.Contains(out.String(), "Sigil dev is running") {
		t.Fatalf("no banner:\n%s", out)
	}
}

// waitUnix waits for a socket while the process lives; go run may compile first.
// outputOf reads what the process wrote so far.
type outputOf string

func (o outputOf) String() string {
	b, _ := os.ReadFile(string(o))
	return string(b)
}

func waitUnix(t *testing.T, path string, done <-chan struct{}, out fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("exited before %s was ready:\n%s", path, out)
		default:
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 5m:\n%s", path, out)
}

// waitOutput waits while the process lives until it has printed want.
func waitOutput(t *testing.T, want string, done <-chan struct{}, out fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), want) {
		select {
		case <-done:
			t.Fatalf("exited before printing %q:\n%s", want, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("did not print %q within 1m:\n%s", want, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
