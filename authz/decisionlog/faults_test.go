package decisionlog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

// tmpfs mounts a small tmpfs (root needed: run the tests as root, as CI
// does) so the disk really fills.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the full-disk tests need root and mount(8)): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func bigDecision(i int) decisionlog.Entry {
	e := decision(i)
	e.Detail = strings.Repeat("x", 1500)
	return e
}

func endsWithNewline(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		t.Fatalf("%s ends with a torn line (%d bytes after the last newline)", path, len(raw)-bytes.LastIndexByte(raw, '\n')-1)
	}
}

// Issue 10 item 6: on a full filesystem a required (deny) log must make
// Log fail, leave no torn line, resume when space returns and restart.
func TestFullDisk(t *testing.T) {
	for _, policy := range []decisionlog.FailurePolicy{decisionlog.FailDeny, decisionlog.FailAllow} {
		t.Run(string(policy), func(t *testing.T) {
			s := newSigner(t)
			dir := tmpfs(t, "64k")
			filler := filepath.Join(dir, "filler")
			if err := os.WriteFile(filler, make([]byte, 24<<10), 0o600); err != nil {
				t.Fatal(err)
			}
			f := newFiles(dir)
			r := run(t, f.config(s, opts{every: 5, policy: policy}))
			failedAt := -1
			for i := range 200 {
				err := r.l.Log(context.Background(), bigDecision(i), nil)
				if policy == decisionlog.FailAllow {
					if err != nil {
						t.Fatalf("allow policy: Log = %v", err)
					}
					if r.l.Stats().NotRecorded > 0 {
						failedAt = i
						break
					}
					time.Sleep(time.Millisecond) // let the writer catch up
					continue
				}
				if err != nil {
					if !errors.Is(err, decisionlog.ErrNotRecorded) {
						t.Fatalf("Log = %v, want ErrNotRecorded", err)
					}
					failedAt = i
					break
				}
			}
			if failedAt < 0 {
				t.Fatal("the disk never filled")
			}
			endsWithNewline(t, f.log)
			if st := r.l.Stats(); st.WriteFailures == 0 || st.NotRecorded == 0 {
				t.Fatalf("stats %+v, want counted failures", st)
			}
			// Space returns: logging resumes on the same chain.
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := r.l.Log(context.Background(), decision(1000+i), nil); err != nil {
					t.Fatalf("after freeing space: %v", err)
				}
			}
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			rep, err := verifyFiles(t, s.roots, f.cps, false, f.log)
			if err != nil {
				t.Fatalf("verify after full disk: %v", err)
			}
			if rep.Uncovered != 0 {
				t.Fatalf("report %+v: the shutdown checkpoint should cover everything", rep)
			}
			// A restart on the same files continues.
			writeLog(t, f, s, 2, opts{every: 5, policy: policy, startFrom: 2000})
			if _, err := verifyFiles(t, s.roots, f.cps, false, f.log); err != nil {
				t.Fatalf("verify after restart: %v", err)
			}
		})
	}
}

// A restart on a full disk with a torn tail (left by an older version or
// a crash) repairs it; old code refused to start.
func TestRepairTornTailOnStart(t *testing.T) {
	s := newSigner(t)
	f := newFiles(t.TempDir())
	writeLog(t, f, s, 5, opts{})
	torn := `{"decision_id":"d-5","time":"2026-11-23T12:00:05Z","sou`
	appendFile(t, f.log, torn)
	writeLog(t, f, s, 2, opts{startFrom: 10})
	rep, err := verifyFiles(t, s.roots, f.cps, false, f.log)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(torn))
	if len(rep.Repairs) != 1 || rep.Repairs[0].Bytes != int64(len(torn)) || rep.Repairs[0].SHA256 != hex.EncodeToString(sum[:]) || rep.Repairs[0].Seq != 6 {
		t.Fatalf("repairs %+v, want one marker at seq 6 for %d bytes", rep.Repairs, len(torn))
	}
	if rep.Decisions != 7 {
		t.Fatalf("%d decisions, want 7", rep.Decisions)
	}
}

const helperEnv = "SIGIL_DECISIONLOG_KILL_HELPER"

// TestMain lets the test binary act as the helper process that a test
// kills with SIGKILL while it writes the log.
func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(killHelper(path))
	}
	os.Exit(m.Run())
}

// killHelper writes large decisions as fast as it can until killed. Lines
// of 100 KB are written in 64 KiB chunks, so a kill mostly lands between
// two chunks of one line.
func killHelper(path string) int {
	l, err := decisionlog.New(decisionlog.Config{
		Sinks:     []decisionlog.Sink{decisionlog.NewFileSink(path, 0, 0)},
		OnFailure: decisionlog.FailAllow,
		MaxLine:   1 << 20,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() { _ = l.Run(context.Background()) }()
	detail := strings.Repeat("y", 100<<10)
	for i := 0; ; i++ {
		e := decision(i)
		e.Detail = detail
		_ = l.Log(context.Background(), e, nil)
		if i%8 == 7 {
			time.Sleep(time.Millisecond)
		}
	}
}

// Issue 10 item 6: a real kill -9 of a process writing the log, then
// repair on reopen.
func TestKill9MidWriteThenRepair(t *testing.T) {
	s := newSigner(t)
	var tornTail []byte
	var f logFiles
	for attempt := 0; attempt < 30 && tornTail == nil; attempt++ {
		f = newFiles(t.TempDir())
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+f.log)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if st, err := os.Stat(f.log); err == nil && st.Size() > int64(2+attempt%5)<<18 {
				break
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatal("helper wrote nothing")
			}
			time.Sleep(time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("helper exit: %v, want killed", err)
		}
		raw, err := os.ReadFile(f.log)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(raw, '\n'); i < len(raw)-1 {
			tornTail = raw[i+1:]
		}
	}
	if tornTail == nil {
		t.Fatal("30 kills never landed mid-line")
	}
	// Reopen with checkpoints on: the torn line is cut and marked.
	r := run(t, f.config(s, opts{}))
	if err := r.l.Log(context.Background(), decision(0), &authv3.CheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.l.Stats().Repairs; got != 1 {
		t.Fatalf("repairs = %d, want 1", got)
	}
	rep, err := verifyFiles(t, s.roots, f.cps, false, f.log)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tornTail)
	if len(rep.Repairs) != 1 || rep.Repairs[0].Bytes != int64(len(tornTail)) || rep.Repairs[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("repairs %+v, want %d bytes", rep.Repairs, len(tornTail))
	}
}

// Issue 10 item 12: a 3 MB body is cut to MaxBody and the line bounded.
func TestBodyAndLineBounds(t *testing.T) {
	var buf bytes.Buffer
	l, err := decisionlog.New(decisionlog.Config{
		Sinks: []decisionlog.Sink{decisionlog.NewWriterSink(&buf)}, LogRequest: true, MaxLine: 16 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	body := strings.Repeat("é", 1<<20+5) // 3 MB of 2-byte runes: the cut must not split one
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/upload", Body: body, RawBody: []byte(body),
	}}}}
	lctx, lcancel := context.WithTimeout(context.Background(), time.Minute) // slow under -race
	defer lcancel()
	if err := l.Log(lctx, decision(0), req); err != nil {
		t.Fatal(err)
	}
	huge := decision(1)
	huge.Path = "/" + strings.Repeat("\x01", 1<<20) // escapes six-fold in JSON
	huge.Detail = strings.Repeat("<", 1<<20)
	if err := l.Log(lctx, huge, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	for i, line := range lines {
		if len(line) > 16<<10 {
			t.Fatalf("line %d is %d bytes, over MaxLine", i+1, len(line))
		}
	}
	e, err := decisionlog.Decode([]byte(lines[0]))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.DecodeRequest()
	if err != nil {
		t.Fatal(err)
	}
	h := got.GetAttributes().GetRequest().GetHttp()
	if !e.BodyTruncated || e.BodyLen != int64(len(body)) || len(h.Body) > decisionlog.DefaultMaxBody || len(h.Body) < decisionlog.DefaultMaxBody-1 || len(h.RawBody) != decisionlog.DefaultMaxBody {
		t.Fatalf("body_truncated %v body_len %d, logged body %d / raw %d bytes", e.BodyTruncated, e.BodyLen, len(h.Body), len(h.RawBody))
	}
	e2, err := decisionlog.Decode([]byte(lines[1]))
	if err != nil {
		t.Fatal(err)
	}
	if e2.LineTruncated != "fields" || !strings.HasPrefix(e2.Path, "/\x01") {
		t.Fatalf("line_truncated %q, path %q...", e2.LineTruncated, e2.Path[:min(4, len(e2.Path))])
	}
	if st := l.Stats(); st.BodyTruncated != 1 || st.LineTruncated != 1 {
		t.Fatalf("stats %+v", st)
	}
}
