package decisionlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

// writeLog writes n decisions through a real Logger and file sink.
func writeLog(t *testing.T, path string, n int, maxBytes int64) {
	t.Helper()
	l, err := decisionlog.New(decisionlog.Config{Sinks: []decisionlog.Sink{decisionlog.NewFileSink(path, maxBytes, 10)}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Record(decisionlog.Entry{
			DecisionID: string(rune('a'+i%26)) + "-id",
			Time:       time.Date(2026, 11, 23, 12, 0, i, 0, time.UTC),
			Source:     "spiffe://example.org/ns/shop/sa/frontend",
			Method:     "GET", Path: "/items", Result: "allow", Reason: "allowed",
		}, nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run flushes what is queued and returns
	if err := l.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func verify(t *testing.T, files ...string) (*decisionlog.Verifier, error) {
	t.Helper()
	var v decisionlog.Verifier
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Check(f, bytes.NewReader(raw)); err != nil {
			return &v, err
		}
	}
	return &v, nil
}

func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(lines []string) []string
		line   int
		why    string
	}{
		{"intact", func(l []string) []string { return l }, 0, ""},
		{"edited middle line", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"result":"allow"`, `"result":"deny"`, 1)
			return l
		}, 3, "edited"},
		{"edited last line", func(l []string) []string {
			l[4] = strings.Replace(l[4], `/items`, `/admin`, 1)
			return l
		}, 5, "edited"},
		{"line deleted", func(l []string) []string { return append(l[:1], l[2:]...) }, 2, "missing"},
		{"lines reordered", func(l []string) []string { l[1], l[2] = l[2], l[1]; return l }, 2, "missing"},
		{"line repeated", func(l []string) []string { return append(l[:3], l[2:]...) }, 4, "reordered or repeated"},
		{"first line deleted", func(l []string) []string { return l[1:] }, 0, ""},
		{"line replaced by a re-sealed one", func(l []string) []string {
			// a forger who recomputes the line's own hash still breaks the next link
			return append(l[:2], append([]string{resealed(t, l[2])}, l[3:]...)...)
		}, 4, "previous-line hash"},
		{"garbage line", func(l []string) []string { l[3] = "{}"; return l }, 4, "edited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decisions.log")
			writeLog(t, path, 5, 0)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
			if len(lines) != 5 {
				t.Fatalf("wrote %d lines", len(lines))
			}
			lines = tt.tamper(lines)
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			v, err := verify(t, path)
			if tt.line == 0 {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if tt.name == "first line deleted" && v.FirstSeq != 2 {
					t.Fatalf("FirstSeq = %d, want 2 so the gap is reported", v.FirstSeq)
				}
				return
			}
			var be *decisionlog.BrokenError
			if !errors.As(err, &be) {
				t.Fatalf("verify = %v, want a broken line", err)
			}
			if be.Line != tt.line || !strings.Contains(be.Why, tt.why) {
				t.Fatalf("verify = %v, want line %d (%s)", err, tt.line, tt.why)
			}
		})
	}
}

// resealed edits a line and recomputes its own hash, as a forger would.
func resealed(t *testing.T, line string) string {
	t.Helper()
	i := strings.LastIndex(line, `,"hash":"`)
	body := strings.Replace(line[:i], `"result":"allow"`, `"result":"deny"`, 1)
	return decisionlog.SealForTest(body)
}

func TestChainContinuesAcrossRestartAndRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.log")
	writeLog(t, path, 30, 2000) // rotates into decisions.log.N
	writeLog(t, path, 30, 2000) // restart: continues the chain
	var files []string
	for i := 10; i >= 1; i-- {
		p := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		t.Fatal("log never rotated")
	}
	files = append(files, path)
	v, err := verify(t, files...)
	if err != nil {
		t.Fatal(err)
	}
	if v.Lines+int(v.FirstSeq)-1 != 60 {
		t.Fatalf("verified %d lines from seq %d, want up to seq 60", v.Lines, v.FirstSeq)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("decision log mode %v, want 0600", st.Mode().Perm())
	}
}

func TestRecordNeverBlocks(t *testing.T) {
	var dropped int
	l, err := decisionlog.New(decisionlog.Config{
		Sinks:  []decisionlog.Sink{decisionlog.NewWriterSink(&bytes.Buffer{})},
		Buffer: 4,
		OnDrop: func() { dropped++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Run is not started: the buffer fills and further records are dropped.
	for range 10 {
		l.Record(decisionlog.Entry{DecisionID: "x"}, nil)
	}
	if dropped != 6 || l.Dropped() != 6 {
		t.Fatalf("dropped = %d (%d), want 6", dropped, l.Dropped())
	}
}
