package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	cliParent = "spiffe://example.org/sigil/agent/join_token/abc"
	cliCart   = "spiffe://example.org/ns/shop/sa/cart"
)

func TestEntryCommands(t *testing.T) {
	e := startAdmin(t)
	sock := []string{"--admin-socket", e.socket}

	out, _, err := run(t, "", append([]string{"entry", "create", "--spiffe-id", cliCart, "--parent-id", cliParent,
		"--selector", "unix:uid:1000", "--selector", "unix:gid:50", "--x509-ttl", "2h", "--dns", "cart.shop", "--admin"}, sock...)...)
	if err != nil {
		t.Fatalf("entry create: %v", err)
	}
	if !strings.Contains(out, cliCart) || !strings.Contains(out, "unix:gid:50,unix:uid:1000") || !strings.Contains(out, "2h0m0s") {
		t.Fatalf("entry create printed:\n%s", out)
	}
	id := regexp.MustCompile(`(?m)^(\S+)\s+spiffe://`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no entry id in:\n%s", out)
	}

	// A batch from a file, all or none.
	file := filepath.Join(t.TempDir(), "entries.yaml")
	if err := os.WriteFile(file, []byte(`
- spiffe_id: spiffe://example.org/ns/shop/sa/web
  parent_id: `+cliParent+`
  selectors: [unix:uid:1001]
- spiffe_id: spiffe://example.org/ns/shop/sa/db
  parent_id: `+cliParent+`
  selectors: [unix:uid:1002]
  jwt_ttl: 5m
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "", append([]string{"entry", "create", "--file", file}, sock...)...); err != nil {
		t.Fatalf("entry create --file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("- spiffe_id: spiffe://example.org/x\n  parent_id: "+cliParent+"\n  selectors: [unix:uid:1]\n- spiffe_id: spiffe://evil.org/x\n  parent_id: "+cliParent+"\n  selectors: [unix:uid:1]\n"), 0o600)
	_, _, err = run(t, "", append([]string{"entry", "create", "--file", bad}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "invalid argument: entries[1].spiffe_id") {
		t.Fatalf("bad batch error = %v", err)
	}
	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	os.WriteFile(unknown, []byte("- spiffe_id: spiffe://example.org/x\n  selector: [unix:uid:1]\n"), 0o600)
	_, _, err = run(t, "", append([]string{"entry", "create", "--file", unknown}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), `line 2: unknown key "selector"`) {
		t.Fatalf("unknown key error = %v", err)
	}
	_, _, err = run(t, "", append([]string{"entry", "create", "--file", file, "--admin"}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "--admin cannot be combined with --file") {
		t.Fatalf("--file with flags error = %v", err)
	}
	_, _, err = run(t, "", append([]string{"entry", "create", "--spiffe-id", cliCart, "--parent-id", cliParent}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "--selector") {
		t.Fatalf("missing selector error = %v", err)
	}

	out, _, err = run(t, "", append([]string{"entry", "list"}, sock...)...)
	if err != nil {
		t.Fatalf("entry list: %v", err)
	}
	if lines := strings.Count(strings.TrimSpace(out), "\n"); lines != 3 {
		t.Fatalf("entry list printed %d rows, want header + 3:\n%s", lines, out)
	}
	out, _, err = run(t, "", append([]string{"entry", "list", "--spiffe-id", cliCart, "--output", "json"}, sock...)...)
	if err != nil {
		t.Fatalf("entry list --output json: %v", err)
	}
	var listed struct {
		Entries []struct {
			ID        string   `json:"id"`
			SPIFFEID  string   `json:"spiffe_id"`
			Selectors []string `json:"selectors"`
			Admin     bool     `json:"admin"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("entry list json: %v\n%s", err, out)
	}
	if len(listed.Entries) != 1 || listed.Entries[0].ID != id[1] || !listed.Entries[0].Admin || len(listed.Entries[0].Selectors) != 2 {
		t.Fatalf("entry list json = %+v", listed)
	}

	out, _, err = run(t, "", append([]string{"entry", "show", id[1]}, sock...)...)
	if err != nil {
		t.Fatalf("entry show: %v", err)
	}
	for _, want := range []string{"SPIFFE ID:", cliCart, "Parent ID:", cliParent, "cart.shop", "Admin:", "true"} {
		if !strings.Contains(out, want) {
			t.Fatalf("entry show lacks %q:\n%s", want, out)
		}
	}

	out, _, err = run(t, "", append([]string{"entry", "update", id[1], "--admin=false", "--selector", "unix:uid:7"}, sock...)...)
	if err != nil {
		t.Fatalf("entry update: %v", err)
	}
	if !strings.Contains(out, "unix:uid:7") || !regexp.MustCompile(`Admin:\s+false`).MatchString(out) || !strings.Contains(out, "2h0m0s") {
		t.Fatalf("entry update printed:\n%s", out)
	}

	out, _, err = run(t, "", append([]string{"entry", "delete", id[1]}, sock...)...)
	if err != nil || !strings.Contains(out, "deleted entry "+id[1]) {
		t.Fatalf("entry delete: %q, %v", out, err)
	}
	_, _, err = run(t, "", append([]string{"entry", "show", id[1]}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "entry \""+id[1]+"\" not found") {
		t.Fatalf("show deleted entry error = %v", err)
	}
}

// TestEntryCreateRefusesUnattestableSelectors: a selector no attestor can
// make is refused with a message naming it, not stored to match nothing.
func TestEntryCreateRefusesUnattestableSelectors(t *testing.T) {
	e := startAdmin(t)
	for _, tc := range []struct {
		parent, sel, want string
	}{
		{cliParent, "foo:bar", `no attestor makes "foo" selectors here (workload selector types: k8s, unix)`},
		{cliParent, "unix:uid:abc", "want a uid in decimal"},
		{cliParent, "k8s:namespace:shop", `has no key "namespace"`},
		{cliParent, "x509pop:subject:cn:node-1", "describe nodes and are for node-alias entries"},
		{"spiffe://example.org/sigil/ca", "unix:uid:1000", "a node-alias entry needs node selectors (k8s_psat, x509pop)"},
	} {
		_, _, err := run(t, "", "entry", "create", "--spiffe-id", cliCart, "--parent-id", tc.parent, "--selector", tc.sel, "--admin-socket", e.socket)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.sel) {
			t.Errorf("entry create --selector %s under %s: %v, want an error containing %q", tc.sel, tc.parent, err, tc.want)
		}
	}
	// A node alias with node selectors is fine.
	if _, _, err := run(t, "", "entry", "create", "--spiffe-id", "spiffe://example.org/nodes/web", "--parent-id", "spiffe://example.org/sigil/ca",
		"--selector", "x509pop:subject:cn:node-1", "--admin-socket", e.socket); err != nil {
		t.Fatalf("node alias: %v", err)
	}
}

// TestEntryFileDevParent: on sigil dev's admin socket an entry of a file
// without parent_id belongs to the dev agent, as with --parent-id left out.
func TestEntryFileDevParent(t *testing.T) {
	e := startAdmin(t)
	if err := os.WriteFile(filepath.Join(filepath.Dir(e.socket), devAgentIDFile), []byte(cliParent+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "entries.yaml")
	os.WriteFile(file, []byte("- spiffe_id: spiffe://example.org/ns/shop/sa/web\n  selectors: [unix:uid:1001]\n"), 0o600)
	out, _, err := run(t, "", "entry", "create", "-f", file, "--admin-socket", e.socket)
	if err != nil || !strings.Contains(out, cliParent) {
		t.Fatalf("entry create -f without parent_id on a dev socket = %v:\n%s", err, out)
	}
}
