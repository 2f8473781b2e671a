package decisionlog_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/internal/testca"
)

const authzID = "spiffe://example.org/sigil/authz"

// signer is a test CA and the authz identity it issued.
type signer struct {
	roots *x509.CertPool
	id    decisionlog.Identity
}

func newSigner(t *testing.T) signer {
	t.Helper()
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	svid := ca.Issue(t, authzID)
	return signer{roots: ca.RootPool(), id: decisionlog.StaticIdentity(svid.PrivateKey, svid.Certificates)}
}

// logFiles names a log and its checkpoints.
type logFiles struct{ log, cps string }

func newFiles(dir string) logFiles {
	p := filepath.Join(dir, "decisions.log")
	return logFiles{log: p, cps: p + ".checkpoints"}
}

// opts change the Logger a test runs.
type opts struct {
	every     int
	maxBytes  int64
	policy    decisionlog.FailurePolicy
	noCPs     bool
	maxLine   int
	startFrom int
}

func (f logFiles) config(s signer, o opts) decisionlog.Config {
	cfg := decisionlog.Config{
		Sinks:     []decisionlog.Sink{decisionlog.NewFileSink(f.log, o.maxBytes, 10)},
		OnFailure: o.policy,
		MaxLine:   o.maxLine,
	}
	if !o.noCPs {
		cfg.Checkpoint = decisionlog.CheckpointConfig{Sink: decisionlog.NewFileSink(f.cps, 0, 0), Identity: s.id, Every: o.every, Interval: time.Hour}
	}
	return cfg
}

// running is a Logger whose Run is in progress.
type running struct {
	l    *decisionlog.Logger
	stop func() error
}

func run(t *testing.T, cfg decisionlog.Config) running {
	t.Helper()
	l, err := decisionlog.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-errc })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return running{l: l, stop: stop}
}

func decision(i int) decisionlog.Entry {
	result, reason := decisionlog.ResultAllow, "allowed"
	if i%3 == 2 {
		result, reason = decisionlog.ResultDeny, "denied"
	}
	return decisionlog.Entry{
		DecisionID: fmt.Sprintf("d-%d", i),
		Time:       time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		Source:     "spiffe://example.org/ns/shop/sa/frontend",
		Method:     "GET", Path: "/items", Result: result, Reason: reason,
	}
}

// writeLog writes n decisions through a real Logger, then stops it
// cleanly (which writes the last checkpoint).
func writeLog(t *testing.T, f logFiles, s signer, n int, o opts) {
	t.Helper()
	r := run(t, f.config(s, o))
	for i := range n {
		if err := r.l.Log(context.Background(), decision(o.startFrom+i), nil); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func verifyFiles(t *testing.T, roots *x509.CertPool, cps string, allowUnsigned bool, files ...string) (decisionlog.Report, error) {
	t.Helper()
	v := decisionlog.NewVerifier(decisionlog.VerifyOptions{Roots: roots, AllowUnsigned: allowUnsigned})
	if cps != "" {
		raw, err := os.ReadFile(cps)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.AddCheckpoints(cps, bytes.NewReader(raw)); err != nil {
			return decisionlog.Report{}, err
		}
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Check(f, bytes.NewReader(raw)); err != nil {
			return decisionlog.Report{}, err
		}
	}
	return v.Finish()
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(raw), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	data := strings.Join(lines, "\n")
	if len(lines) > 0 {
		data += "\n"
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rechain rewrites lines from index k on with edit and recomputes every
// hash after it, as an attacker holding the file (but not the authz key)
// can.
func rechain(t *testing.T, lines []string, k int, edit func(*decisionlog.Entry)) []string {
	t.Helper()
	prev := ""
	if k > 0 {
		prev = decisionlog.LineHash([]byte(lines[k-1]))
	}
	out := append([]string(nil), lines[:k]...)
	for i, l := range lines[k:] {
		var e decisionlog.Entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			edit(&e)
		}
		e.Prev = prev
		body, err := decisionlog.AppendEntryForTest(&e)
		if err != nil {
			t.Fatal(err)
		}
		line := decisionlog.SealForTest(strings.TrimSuffix(string(body), "}"))
		out = append(out, line)
		prev = decisionlog.LineHash([]byte(line))
	}
	return out
}

// The attacks of issue 10 item 5, from outside: on the files alone.
// Before signed checkpoints every one of them verified as "chain intact".
func TestVerifyAttacks(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t) // an attacker's own CA and key
	tests := []struct {
		name    string
		attack  func(t *testing.T, f logFiles)
		want    string // substring of the error; "" means verifies
		allowUn bool
	}{
		{"intact", func(*testing.T, logFiles) {}, "", false},
		{"truncate last 3 lines", func(t *testing.T, f logFiles) {
			l := readLines(t, f.log)
			writeLines(t, f.log, l[:len(l)-3])
		}, "3 line(s) were cut from its end", false},
		{"truncate first 2 lines", func(t *testing.T, f logFiles) {
			writeLines(t, f.log, readLines(t, f.log)[2:])
		}, "2 earlier line(s) were cut from its start", false},
		{"empty file", func(t *testing.T, f logFiles) { writeLines(t, f.log, nil) }, "log is empty but checkpoint", false},
		{"single line", func(t *testing.T, f logFiles) { writeLines(t, f.log, readLines(t, f.log)[:1]) }, "cut from its end", false},
		{"flip deny to allow, all hashes recomputed", func(t *testing.T, f logFiles) {
			writeLines(t, f.log, rechain(t, readLines(t, f.log), 2, func(e *decisionlog.Entry) {
				if e.Result != decisionlog.ResultDeny {
					t.Fatalf("line 3 is %s, want deny", e.Result)
				}
				e.Result, e.Reason = decisionlog.ResultAllow, "allowed"
			}))
		}, "does not match signed checkpoint", false},
		{"edited line", func(t *testing.T, f logFiles) {
			l := readLines(t, f.log)
			l[4] = strings.Replace(l[4], `/items`, `/admin`, 1)
			writeLines(t, f.log, l)
		}, "line was edited", false},
		{"delete a checkpoint", func(t *testing.T, f logFiles) {
			c := readLines(t, f.cps)
			writeLines(t, f.cps, append(c[:1], c[2:]...))
		}, "checkpoint 3 follows checkpoint 1", false},
		{"delete the last checkpoint and the lines it covered", func(t *testing.T, f logFiles) {
			c := readLines(t, f.cps)
			writeLines(t, f.cps, c[:len(c)-1])
			l := readLines(t, f.log)
			writeLines(t, f.log, l[:8])
		}, "", false}, // undetectable locally: ship checkpoints off the box
		{"forged checkpoints by another key", func(t *testing.T, f logFiles) {
			l := rechain(t, readLines(t, f.log), 2, func(e *decisionlog.Entry) { e.Result = decisionlog.ResultAllow })
			writeLines(t, f.log, l)
			forged := filepath.Join(t.TempDir(), "decisions.log")
			// The attacker re-signs the rewritten log with their own key.
			writeLines(t, forged, l)
			r := run(t, newFiles(filepath.Dir(forged)).config(other, opts{}))
			if err := r.stop(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(forged + ".checkpoints")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.cps, raw, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "signer does not chain to the trust bundle", false},
		{"checkpoints removed", func(t *testing.T, f logFiles) { writeLines(t, f.cps, nil) }, "no signed checkpoint", false},
		{"checkpoints removed, allow unsigned", func(t *testing.T, f logFiles) { writeLines(t, f.cps, nil) }, "", true},
		{"torn checkpoint tail is ignored", func(t *testing.T, f logFiles) {
			appendFile(t, f.cps, `{"n":4,"seq":`)
		}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFiles(t.TempDir())
			writeLog(t, f, s, 10, opts{every: 4}) // checkpoints at seq 4, 8 and (shutdown) 10
			if n := len(readLines(t, f.cps)); n != 3 {
				t.Fatalf("%d checkpoints, want 3", n)
			}
			tt.attack(t, f)
			rep, err := verifyFiles(t, s.roots, f.cps, tt.allowUn, f.log)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("verify = %v (report %+v), want an error containing %q", err, rep, tt.want)
			}
		})
	}
}

func appendFile(t *testing.T, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyReportsUncoveredLines(t *testing.T) {
	s := newSigner(t)
	f := newFiles(t.TempDir())
	writeLog(t, f, s, 10, opts{every: 4})
	// A crash after the last checkpoint: lines written but not covered.
	c := readLines(t, f.cps)
	writeLines(t, f.cps, c[:2]) // covers seq 8
	rep, err := verifyFiles(t, s.roots, f.cps, false, f.log)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Covered != 8 || rep.Uncovered != 2 || rep.Decisions != 10 || len(rep.Signers) != 1 || rep.Signers[0] != authzID {
		t.Fatalf("report %+v, want covered 8, 2 uncovered, 10 decisions, signer %s", rep, authzID)
	}
}

func TestChainContinuesAcrossRestartAndRotation(t *testing.T) {
	s := newSigner(t)
	dir := t.TempDir()
	f := newFiles(dir)
	writeLog(t, f, s, 30, opts{maxBytes: 2000, every: 5})
	writeLog(t, f, s, 30, opts{maxBytes: 2000, every: 5, startFrom: 30}) // restart: continues the chain
	var files []string
	for i := 10; i >= 1; i-- {
		p := fmt.Sprintf("%s.%d", f.log, i)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	if len(files) < 2 {
		t.Fatal("log never rotated")
	}
	files = append(files, f.log)
	rep, err := verifyFiles(t, s.roots, f.cps, false, files...)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Decisions != 60 || rep.Uncovered != 0 || rep.Rotations != len(files)-1 {
		t.Fatalf("report %+v, want 60 decisions, all covered, %d rotations", rep, len(files)-1)
	}
	// The newest file verifies on its own: its rotation marker links to a
	// checkpointed line.
	if _, err := verifyFiles(t, s.roots, f.cps, false, f.log); err != nil {
		t.Fatalf("newest file alone: %v", err)
	}
	// ... and not with its first line (the marker) dropped.
	writeLines(t, f.log, readLines(t, f.log)[1:])
	if _, err := verifyFiles(t, s.roots, f.cps, false, f.log); err == nil || !strings.Contains(err.Error(), "cut from its start") {
		t.Fatalf("newest file without its marker: %v", err)
	}
	st, err := os.Stat(f.log)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("decision log mode %v, want 0600", st.Mode().Perm())
	}
}

func TestRotatingIdentityIsFollowed(t *testing.T) {
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	id := &rotating{svids: []*x509svid.SVID{ca.Issue(t, authzID), ca.Issue(t, authzID)}}
	f := newFiles(t.TempDir())
	cfg := f.config(signer{}, opts{every: 2})
	cfg.Checkpoint.Identity = id
	r := run(t, cfg)
	for i := range 6 {
		if err := r.l.Log(context.Background(), decision(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if id.calls < 3 {
		t.Fatalf("identity asked %d times, want once per checkpoint", id.calls)
	}
	if _, err := verifyFiles(t, ca.RootPool(), f.cps, false, f.log); err != nil {
		t.Fatal(err)
	}
}

func TestRestartRefusesLogBehindItsCheckpoint(t *testing.T) {
	s := newSigner(t)
	f := newFiles(t.TempDir())
	writeLog(t, f, s, 10, opts{every: 4})
	l := readLines(t, f.log)
	writeLines(t, f.log, l[:5])
	lg, err := decisionlog.New(f.config(s, opts{}))
	if err != nil {
		t.Fatal(err)
	}
	err = lg.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "truncated or replaced") {
		t.Fatalf("Run = %v, want a refusal", err)
	}
	// Log after a failed start does not hang: the decision is not recorded.
	if err := lg.Log(context.Background(), decision(0), nil); !errors.Is(err, decisionlog.ErrNotRecorded) {
		t.Fatalf("Log after failed Run = %v", err)
	}
}

func TestAllowPolicyNeverBlocks(t *testing.T) {
	var dropped int
	l, err := decisionlog.New(decisionlog.Config{
		Sinks:     []decisionlog.Sink{decisionlog.NewWriterSink(&bytes.Buffer{})},
		Buffer:    4,
		OnDrop:    func() { dropped++ },
		OnFailure: decisionlog.FailAllow,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Run is not started: the buffer fills and further records are dropped.
	for range 10 {
		if err := l.Log(context.Background(), decisionlog.Entry{DecisionID: "x"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if dropped != 6 || l.Dropped() != 6 {
		t.Fatalf("dropped = %d (%d), want 6", dropped, l.Dropped())
	}
}

func TestDenyPolicyWaitsForTheWrite(t *testing.T) {
	l, err := decisionlog.New(decisionlog.Config{Sinks: []decisionlog.Sink{decisionlog.NewWriterSink(&bytes.Buffer{})}})
	if err != nil {
		t.Fatal(err)
	}
	// Without Run nothing is written: Log gives up at its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Log(ctx, decisionlog.Entry{DecisionID: "x"}, nil); !errors.Is(err, decisionlog.ErrNotRecorded) {
		t.Fatalf("Log = %v, want ErrNotRecorded", err)
	}
}

func TestConfigErrors(t *testing.T) {
	sinks := []decisionlog.Sink{decisionlog.NewWriterSink(&bytes.Buffer{})}
	for _, tt := range []struct {
		name string
		cfg  decisionlog.Config
		want string
	}{
		{"no sink", decisionlog.Config{}, "at least one sink"},
		{"bad policy", decisionlog.Config{Sinks: sinks, OnFailure: "maybe"}, `on_failure "maybe"`},
		{"tiny line", decisionlog.Config{Sinks: sinks, MaxLine: 100}, "max_line 100"},
		{"body over line", decisionlog.Config{Sinks: sinks, MaxLine: 8192, MaxBody: 9000}, "max_body 9000"},
		{"negative", decisionlog.Config{Sinks: sinks, MaxBody: -1}, "must not be negative"},
		{"checkpoints without identity", decisionlog.Config{Sinks: sinks, Checkpoint: decisionlog.CheckpointConfig{Sink: decisionlog.NewFileSink("x", 0, 0)}}, "signing identity"},
		{"checkpoints without file", decisionlog.Config{Sinks: sinks, Checkpoint: decisionlog.CheckpointConfig{Sink: decisionlog.NewFileSink("x", 0, 0), Identity: decisionlog.StaticIdentity(nil, nil)}}, "file sink"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decisionlog.New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want %q", err, tt.want)
			}
		})
	}
}

// rotating hands out its SVIDs in turn, as a Workload API source does
// across rotations.
type rotating struct {
	mu    sync.Mutex
	svids []*x509svid.SVID
	calls int
}

func (r *rotating) GetX509SVID() (*x509svid.SVID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.svids[r.calls%len(r.svids)]
	r.calls++
	return s, nil
}
