package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	out, _, err := run(t, "", "version")
	if err != nil || !strings.HasPrefix(out, "sigil ") || !strings.Contains(out, runtime.Version()) || !strings.Contains(out, "commit ") {
		t.Fatalf("version: %q, %v", out, err)
	}
	flag, _, err := run(t, "", "--version")
	if err != nil || flag != out {
		t.Fatalf("--version printed %q (%v), want what version prints: %q", flag, err, out)
	}
	js, _, err := run(t, "", "version", "-o", "json")
	var v struct {
		Version, Commit string
		GoVersion       string `json:"go_version"`
	}
	if err != nil || json.Unmarshal([]byte(js), &v) != nil || v.GoVersion != runtime.Version() || v.Version == "" || v.Commit == "" {
		t.Fatalf("version -o json: %q, %v", js, err)
	}
}

// Every component's registry (ca, agent, authz and dev share newRegistry)
// exports sigil_build_info.
func TestRegistryHasBuildInfo(t *testing.T) {
	mfs, err := newRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sigil_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["go_version"] != runtime.Version() || labels["version"] == "" || labels["commit"] == "" {
			t.Fatalf("sigil_build_info labels %v", labels)
		}
		return
	}
	t.Fatal("no sigil_build_info in the registry")
}
