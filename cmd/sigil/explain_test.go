package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread/decisionreadtest"
	"github.com/sigilhq/sigil/authz/explain"
	"github.com/sigilhq/sigil/policies"
)

func TestExplainCommand(t *testing.T) {
	dir := t.TempDir()
	if err := policies.Seed(dir); err != nil {
		t.Fatal(err)
	}
	const (
		frontend = "spiffe://example.org/ns/shop/sa/frontend"
		cart     = "spiffe://example.org/ns/shop/sa/cart"
	)
	out, _, err := run(t, "", "explain", "--policy", dir, "--source", frontend, "--destination", cart, "--method", "DELETE", "--path", "/items/7")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DENY (denied)", "default allow := false", "method in edge.methods  is false", "data.sigil.mesh.method_ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}

	out, _, err = run(t, "", "explain", "--policy", dir, "--source", frontend, "--destination", cart, "--path", "/items", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ex explain.Explanation
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if ex.Result != "allow" || len(ex.DecidedBy) != 1 || ex.DecidedBy[0].Text != "allow if mesh.allow" {
		t.Errorf("allowed request explained as %+v", ex)
	}

	logPath := filepath.Join(t.TempDir(), "decisions.log")
	decisionreadtest.WriteLog(t, logPath, 2, func(i int) decisionreadtest.Decision {
		method := []string{"GET", "DELETE"}[i]
		// The first keeps no request: explained from the entry's fields.
		var req = explain.Request(frontend, cart, method, "/items/7", nil)
		if i == 0 {
			req = nil
		}
		return decisionreadtest.Decision{Request: req,
			Entry: decisionlog.Entry{DecisionID: "id-" + method, Time: time.Now(), Source: frontend, Destination: cart, Method: method, Path: "/items/7", Result: "deny", Reason: "denied"},
		}
	})
	out, errOut, err := run(t, "", "explain", "--policy", dir, "--decision-log", logPath, "--id", "id-DELETE")
	if err != nil || !strings.Contains(out, "method in edge.methods") || !strings.Contains(errOut, "was deny (denied)") {
		t.Fatalf("explain --id: %v\n%s\n%s", err, out, errOut)
	}
	_, errOut, err = run(t, "", "explain", "--policy", dir, "--decision-log", logPath, "--seq", "1")
	if err != nil || !strings.Contains(errOut, "kept no request") {
		t.Fatalf("explain --seq 1: %v\n%s", err, errOut)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"explain", "--source", frontend, "--destination", cart}, "say where the policy is"},
		{[]string{"explain", "--policy", dir}, "give --source and --destination"},
		{[]string{"explain", "--policy", dir, "--seq", "3"}, "need --decision-log"},
		{[]string{"explain", "--policy", dir, "--decision-log", logPath, "--seq", "99"}, "decision not found"},
		{[]string{"explain", "--policy", dir, "--source", frontend, "--destination", cart, "--header", "nothing"}, "want NAME=VALUE"},
		{[]string{"explain", "--policy", dir, "--source", frontend, "--destination", cart, "-o", "xml"}, "want table, json or yaml"},
		{[]string{"explain", "--policy", filepath.Join(dir, "missing"), "--source", frontend, "--destination", cart}, "policy directory"},
	} {
		if _, _, err := run(t, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
