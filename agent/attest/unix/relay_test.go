package unix_test

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/peercred/peercredtest"
	"github.com/sigilhq/sigil/internal/selector"
)

// buildRelay builds testdata/relay into dir as "relay" and copies it to
// "target" with bytes appended, so that the two differ in path and digest.
// It returns both paths and the target's sha256.
func buildRelay(t testing.TB, dir string) (relay, target, targetSum string) {
	t.Helper()
	relay = filepath.Join(dir, "relay")
	out, err := exec.Command("go", "build", "-o", relay, "./testdata/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("build testdata/relay (needs the go tool on PATH): %v\n%s", err, out)
	}
	b, err := os.ReadFile(relay)
	if err != nil {
		t.Fatal(err)
	}
	target = filepath.Join(dir, "target")
	targetSum = writeExe(t, target, append(b, "target"...))
	return relay, target, targetSum
}

// serveAttest listens on a unix socket in dir and answers each connection
// the way the agent does: peer credentials from the handshake, then, when a
// request ("fetch") arrives, attestation by a and a reply with the
// selectors (or "error: ...") on one line.
func serveAttest(t testing.TB, dir string, a *unix.Attestor) string {
	t.Helper()
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	creds := peercred.NewCredentials()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer raw.Close()
				conn, ai, err := creds.ServerHandshake(raw)
				if err != nil {
					_, _ = io.WriteString(raw, "error: "+err.Error()+"\n")
					return
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil || line != "fetch\n" {
					return
				}
				sels, err := a.Attest(t.Context(), ai.(peercred.Info))
				reply := strings.Join(selector.Strings(sels), " ")
				if err != nil {
					reply = "error: " + err.Error()
				}
				_, _ = io.WriteString(conn, reply+"\n")
			}()
		}
	}()
	return sock
}

// runRelay runs the helper with args and returns the selectors in its
// reply. The helper's process (and the target it may become) ends when the
// test does.
func runRelay(t *testing.T, relay string, args ...string) []string {
	t.Helper()
	stdout := peercredtest.StartPiped(t, exec.Command(relay, args...))
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := stdout.ReadString('\n')
		ch <- result{line, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("relay %v: no reply in 30 s", args)
	}
	rest, ok := strings.CutPrefix(r.line, "reply: ")
	if !ok {
		t.Fatalf("relay %v: %q, %v", args, r.line, r.err)
	}
	rest = strings.TrimSuffix(rest, "\n")
	if strings.HasPrefix(rest, "error: ") {
		t.Fatalf("relay %v: server: %s", args, rest)
	}
	return strings.Fields(rest)
}

func hasExeSelector(sels []string) bool {
	for _, s := range sels {
		if strings.HasPrefix(s, "unix:path:") || strings.HasPrefix(s, "unix:sha256:") {
			return true
		}
	}
	return false
}

// The exec relay: a process connects, hands the connection to a child and
// execs the target binary, which keeps the PID SO_PEERCRED names. The
// child then asks through the connection. It must not be attested as the
// target: no path or sha256 selector at all, since the connection is
// shared (or not held by the credentialed process any more); uid and gid
// still hold.
func TestExecRelay(t *testing.T) {
	dir := worldDir(t)
	relay, target, targetSum := buildRelay(t, dir)
	logs := &lockedBuffer{}
	a := newAttestor(t, unix.Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	sock := serveAttest(t, dir, a)

	t.Run("direct target gets exe selectors", func(t *testing.T) {
		got := runRelay(t, target, "direct", sock)
		for _, want := range []string{"unix:path:" + target, "unix:sha256:" + targetSum, "unix:uid:0"} {
			if !slices.Contains(got, want) {
				t.Fatalf("direct connection from the target: %v, want %s", got, want)
			}
		}
	})
	for _, mode := range []string{"inherit", "cloexec"} {
		t.Run(mode, func(t *testing.T) {
			before := a.Stats().ExeWithheld
			got := runRelay(t, relay, "relay", sock, target, mode)
			if slices.Contains(got, "unix:path:"+target) || slices.Contains(got, "unix:sha256:"+targetSum) {
				t.Fatalf("relay (%s) was attested as the target: %v", mode, got)
			}
			if hasExeSelector(got) {
				t.Fatalf("relay (%s) got an executable selector of a shared connection: %v", mode, got)
			}
			if !slices.Contains(got, "unix:uid:0") || !slices.Contains(got, "unix:gid:0") {
				t.Fatalf("relay (%s) lost its uid and gid selectors: %v", mode, got)
			}
			if after := a.Stats().ExeWithheld; after != before+1 {
				t.Fatalf("ExeWithheld went from %d to %d, want one more", before, after)
			}
			if l := logs.String(); !strings.Contains(l, "workload connection is shared with another process") || !strings.Contains(l, "executable="+target) {
				t.Fatalf("no warning naming the shared connection and %s in the log:\n%s", target, l)
			}
		})
	}
}

func writeExe(t testing.TB, path string, b []byte) string { return peercredtest.WriteExe(t, path, b) }

// lockedBuffer is a log sink for handlers used from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
