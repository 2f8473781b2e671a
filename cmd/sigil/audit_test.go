package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/internal/testca"
)

// auditVerify runs `sigil audit verify args...`.
func auditVerify(args ...string) (string, error) {
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"audit", "verify"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestAuditVerifySignedLog(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	svid := ca.Issue(t, "spiffe://example.org/sigil/authz")
	bundle := ca.WritePEM(t, t.TempDir()).Roots
	logPath := filepath.Join(dir, "decisions.log")
	l, err := decisionlog.New(decisionlog.Config{
		Sinks: []decisionlog.Sink{decisionlog.NewFileSink(logPath, 0, 0)},
		Checkpoint: decisionlog.CheckpointConfig{
			Sink: decisionlog.NewFileSink(logPath+".checkpoints", 0, 0), Identity: decisionlog.StaticIdentity(svid.PrivateKey, svid.Certificates), Every: 3,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for i := range 7 {
		if err := l.Log(context.Background(), decisionlog.Entry{DecisionID: "d", Time: time.Unix(int64(i), 0).UTC(), Result: "allow", Reason: "allowed"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	out, err := auditVerify("--bundle", bundle, logPath)
	if err != nil || !strings.Contains(out, "ok: 7 decisions") || !strings.Contains(out, "latest covers seq 7") || !strings.Contains(out, "spiffe://example.org/sigil/authz") {
		t.Fatalf("audit verify = %v: %s", err, out)
	}
	if _, err := auditVerify(logPath); err == nil || !strings.Contains(err.Error(), "--bundle") {
		t.Fatalf("without --bundle: %v", err)
	}
	// The last checkpoint (shutdown) lost: lines after seq 6 are reported.
	cps, err := os.ReadFile(logPath + ".checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(cps), "\n"), "\n")
	if err := os.WriteFile(logPath+".checkpoints", []byte(strings.Join(lines[:len(lines)-1], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := auditVerify("--bundle", bundle, logPath); err != nil || !strings.Contains(out, "not yet covered: 1 line(s)") {
		t.Fatalf("audit verify = %v: %s", err, out)
	}
	// Truncation is named.
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.SplitAfter(string(raw), "\n")
	if err := os.WriteFile(logPath, []byte(strings.Join(ls[:4], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := auditVerify("--bundle", bundle, logPath); err == nil || !strings.Contains(err.Error(), "cut from its end") {
		t.Fatalf("truncated log: %v", err)
	}
	// Without checkpoints it is refused unless asked.
	if err := os.Remove(logPath + ".checkpoints"); err != nil {
		t.Fatal(err)
	}
	if _, err := auditVerify(logPath); err == nil || !strings.Contains(err.Error(), "no signed checkpoint") {
		t.Fatalf("unsigned log: %v", err)
	}
	if out, err := auditVerify("--allow-unsigned", logPath); err != nil || !strings.Contains(out, "UNSIGNED") {
		t.Fatalf("--allow-unsigned = %v: %s", err, out)
	}
}
