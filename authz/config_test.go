package authz_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/authz"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, yaml, err string
	}{
		{"minimal", "policy:\n  dir: ./p\n", ""},
		{"unknown key names key and line", "listen: 127.0.0.1:1\npolicy:\n  dir: p\n  dri: x\n", "line 4: field dri not found"},
		{"unknown top key", "polcy:\n  dir: p\n", "line 1: field polcy not found"},
		{"no policy", "listen: x\n", "policy is required"},
		{"two sources", "policy:\n  dir: p\n  bundle_file: b.tar.gz\n", "exactly one"},
		{"bad interval", "policy:\n  dir: p\n  poll_interval: soon\n", "poll_interval"},
		{"bad path", "decision_path: data.x[_]\npolicy:\n  dir: p\n", "decision_path"},
		{"bad url", "policy:\n  bundle_url: ftp://x\n", "bundle_url"},
		{"wrong type", "dry_run: maybe\npolicy:\n  dir: p\n", "line 1"},
		{"pprof without metrics listener", "pprof: true\npolicy:\n  dir: p\n", "pprof: needs metrics_listen"},
		{"pprof", "pprof: true\nmetrics_listen: 127.0.0.1:9192\npolicy:\n  dir: p\n", ""},
		{"gc too low", "gc_percent: 5\npolicy:\n  dir: p\n", "gc_percent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := authz.ParseConfig(strings.NewReader(tt.yaml))
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error = %v, want it to mention %q", err, tt.err)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	rc, err := authz.ParseConfig(strings.NewReader("policy:\n  dir: p\ndecision_log:\n  file: d.log\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Listen != "127.0.0.1:9191" || rc.DecisionPath != "data.envoy.authz.allow" || rc.Policy.PollInterval != time.Second || !rc.DecisionLog.LogRequest {
		t.Fatalf("defaults not applied: %+v", rc)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("policy:\n  dir: p\n")
	f.Add("listen: unix:///x\npolicy:\n  bundle_url: http://x/b.tar.gz\n  poll_interval: 5s\nshadow:\n  dir: s\ndecision_log:\n  file: d\n  mask_headers: [a]\n")
	f.Fuzz(func(t *testing.T, s string) {
		rc, err := authz.ParseConfig(strings.NewReader(s))
		if err == nil && rc.DecisionPath == "" {
			t.Fatal("accepted config without a decision path")
		}
	})
}
