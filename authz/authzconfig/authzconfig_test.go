package authzconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/decisionlog"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "minimal", in: "policy:\n  dir: ./p\n", check: func(t *testing.T, c Config) {
			if c.Listen != DefaultListen || c.DecisionPath != "data.envoy.authz.allow" || c.Policy.PollInterval != time.Second || c.GCPercent != 400 {
				t.Fatalf("defaults not applied: %+v", c)
			}
			if c.DecisionLog.Enabled() || c.Shadow != nil || c.HealthAddress != "" {
				t.Fatalf("off by default: %+v", c)
			}
		}},
		{name: "everything", in: "listen: unix:///run/a.sock\nhealth_address: 127.0.0.1:9192\npprof: true\ndecision_path: envoy/http/allow\n" +
			"dry_run: true\nskip_request_body_parse: true\ngc_percent: 100\n" +
			"policy:\n  bundle_url: https://b/x.tar.gz\n  poll_interval: 5s\nshadow:\n  bundle_file: s.tar.gz\n" +
			"decision_log:\n  file: d.log\n  max_bytes: 1048576\n  max_backups: 3\n  stdout: true\n  http_url: http://l/logs\n  buffer: 65536\n  mask_headers: [x-a]\n  log_request: false\n" +
			"  on_failure: allow\n  sync: true\n  max_body: 100\n  max_line: 8192\n" +
			"  checkpoints:\n    workload_api_socket: unix:///run/agent.sock\n    signer_id: spiffe://example.org/authz\n    every: 10\n    interval: 3s\n" +
			"limits:\n  eval_timeout: 50ms\n  max_concurrent_evals: 8\n  max_queued: 16\n  max_body_bytes: 4096\n" +
			"revocation:\n  sds_socket: unix:///run/agent.sock\n  resource: spiffe://example.org\n",
			check: func(t *testing.T, c Config) {
				want := Config{
					Listen: "unix:///run/a.sock", HealthAddress: "127.0.0.1:9192", PProf: true, DecisionPath: "data.envoy.http.allow",
					DryRun: true, SkipBody: true, GCPercent: 100,
					Policy: PolicySource{BundleURL: "https://b/x.tar.gz", PollInterval: 5 * time.Second},
					Shadow: &PolicySource{BundleFile: "s.tar.gz", PollInterval: time.Second},
					DecisionLog: DecisionLog{File: "d.log", MaxBytes: 1 << 20, MaxBackups: 3, Stdout: true, HTTPURL: "http://l/logs",
						Buffer: MaxBuffer, MaskHeaders: []string{"x-a"}, OnFailure: decisionlog.FailAllow, Sync: true, MaxBody: 100, MaxLine: 8192,
						Checkpoints: &Checkpoints{WorkloadAPISocket: "unix:///run/agent.sock", SignerID: "spiffe://example.org/authz", File: "d.log.checkpoints", Every: 10, Interval: 3 * time.Second}},
					Limits:     authz.Limits{EvalTimeout: 50 * time.Millisecond, MaxConcurrentEvals: 8, MaxQueued: 16, MaxBodyBytes: 4096},
					Revocation: &Revocation{SDSSocket: "/run/agent.sock", Resource: "spiffe://example.org"},
				}
				if !reflect.DeepEqual(c, want) {
					t.Fatalf("got  %+v\nwant %+v", c, want)
				}
			}},
		{name: "decision log defaults", in: "policy:\n  dir: p\ndecision_log:\n  file: d.log\n", check: func(t *testing.T, c Config) {
			if !c.DecisionLog.Enabled() || !c.DecisionLog.LogRequest || c.DecisionLog.Buffer != 0 {
				t.Fatalf("decision log: %+v", c.DecisionLog)
			}
		}},
		{name: "unknown key names key and line", in: "listen: 127.0.0.1:1\npolicy:\n  dir: p\n  dri: x\n", wantErr: `line 4: unknown key "dri"`},
		{name: "unknown top key", in: "polcy:\n  dir: p\n", wantErr: `line 1: unknown key "polcy"`},
		{name: "old metrics_listen key", in: "metrics_listen: 127.0.0.1:9192\npolicy:\n  dir: p\n", wantErr: `line 1: unknown key "metrics_listen"`},
		{name: "empty", in: "", wantErr: "config is empty"},
		{name: "only comments", in: "# policy:\n#   dir: p\n", wantErr: "config is empty"},
		{name: "two documents", in: "policy:\n  dir: p\n---\npolicy:\n  dir: q\n", wantErr: "config holds 2 YAML documents"},
		{name: "not yaml", in: "{{{", wantErr: "config:"},
		{name: "wrong type", in: "dry_run: maybe\npolicy:\n  dir: p\n", wantErr: "line 1"},
		{name: "no policy", in: "listen: 127.0.0.1:1\n", wantErr: "policy: required"},
		{name: "two sources", in: "policy:\n  dir: p\n  bundle_file: b.tar.gz\n", wantErr: "policy: set exactly one"},
		{name: "bad interval", in: "policy:\n  dir: p\n  poll_interval: soon\n", wantErr: `policy.poll_interval: "soon"`},
		{name: "interval too short", in: "policy:\n  dir: p\n  poll_interval: 1ns\n", wantErr: "at least 100ms"},
		{name: "bad shadow", in: "policy:\n  dir: p\nshadow:\n  bundle_url: ftp://x\n", wantErr: "shadow.bundle_url"},
		{name: "bad path", in: "decision_path: data.x[_]\npolicy:\n  dir: p\n", wantErr: "decision_path"},
		{name: "bad url", in: "policy:\n  bundle_url: ftp://x\n", wantErr: "policy.bundle_url"},
		{name: "bad listen", in: "listen: nowhere\npolicy:\n  dir: p\n", wantErr: `listen: "nowhere"`},
		{name: "unix listen without path", in: "listen: unix://\npolicy:\n  dir: p\n", wantErr: "listen"},
		{name: "bad health address", in: "health_address: 9192\npolicy:\n  dir: p\n", wantErr: "health_address"},
		{name: "pprof without health address", in: "pprof: true\npolicy:\n  dir: p\n", wantErr: "pprof: needs health_address"},
		{name: "gc too low", in: "gc_percent: 5\npolicy:\n  dir: p\n", wantErr: "gc_percent: 5: want at least 25"},
		{name: "buffer too large", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  buffer: 9223372036854775807\n", wantErr: "decision_log.buffer: 9223372036854775807: want 0 to 65536"},
		{name: "buffer negative", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  buffer: -1\n", wantErr: "decision_log.buffer"},
		{name: "backups too many", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  max_backups: 9223372036854775807\n", wantErr: "decision_log.max_backups"},
		{name: "negative max bytes", in: "policy:\n  dir: p\ndecision_log:\n  max_bytes: -1\n", wantErr: "decision_log.max_bytes"},
		{name: "bad on_failure", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  on_failure: ignore\n", wantErr: `decision_log.on_failure: "ignore": want deny or allow`},
		{name: "sync without file", in: "policy:\n  dir: p\ndecision_log:\n  stdout: true\n  sync: true\n", wantErr: "decision_log.sync: needs decision_log.file"},
		{name: "max_line too small", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  max_line: 100\n", wantErr: "decision_log.max_line: 100: want at least 4096"},
		{name: "max_body over max_line", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  max_body: 70000\n", wantErr: "decision_log.max_body: 70000"},
		{name: "revocation without socket", in: "policy:\n  dir: p\nrevocation: {resource: ROOTCA}\n", wantErr: "revocation.sds_socket"},
		{name: "revocation socket not unix", in: "policy:\n  dir: p\nrevocation: {sds_socket: 127.0.0.1:1}\n", wantErr: "revocation.sds_socket"},
		{name: "checkpoints without socket", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  checkpoints: {every: 5}\n", wantErr: "decision_log.checkpoints.workload_api_socket"},
		{name: "checkpoints without file", in: "policy:\n  dir: p\ndecision_log:\n  stdout: true\n  checkpoints: {workload_api_socket: unix:///a}\n", wantErr: "decision_log.checkpoints: needs decision_log.file"},
		{name: "checkpoint interval too short", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  checkpoints: {workload_api_socket: unix:///a, interval: 10ms}\n", wantErr: "decision_log.checkpoints.interval"},
		{name: "bad signer id", in: "policy:\n  dir: p\ndecision_log:\n  file: d\n  checkpoints: {workload_api_socket: unix:///a, signer_id: x}\n", wantErr: "decision_log.checkpoints.signer_id"},
		{name: "eval timeout too long", in: "policy:\n  dir: p\nlimits:\n  eval_timeout: 1h\n", wantErr: `limits.eval_timeout: "1h"`},
		{name: "negative queue", in: "policy:\n  dir: p\nlimits:\n  max_queued: -1\n", wantErr: "limits.max_queued: -1"},
		{name: "bad log url", in: "policy:\n  dir: p\ndecision_log:\n  http_url: x\n", wantErr: "decision_log.http_url"},
		{name: "every error at once", in: "gc_percent: 1\npolicy:\n  dir: p\n  bundle_file: b\n", wantErr: "gc_percent: 1: want at least 25\npolicy: set exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(path, []byte("policy:\n  dir: p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(path); err != nil || c.Policy.Dir != "p" {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	if err := os.WriteFile(path, []byte("policy:\n  dri: p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+": config: line 2") {
		t.Fatalf("Load of a bad file = %v, want the path and line", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("Load of a missing file = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("policy:\n  dir: p\n")
	f.Add("listen: unix:///x\npolicy:\n  bundle_url: http://x/b.tar.gz\n  poll_interval: 5s\nshadow:\n  dir: s\ndecision_log:\n  file: d\n  mask_headers: [a]\n")
	f.Add("policy:\n  dir: p\ndecision_log:\n  buffer: 9223372036854775807\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse([]byte(s))
		if err != nil {
			return
		}
		if c.DecisionPath == "" || c.Listen == "" || c.Policy.PollInterval < MinPollInterval || c.GCPercent < MinGCPercent {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
		if dl := c.DecisionLog; dl.Buffer < 0 || dl.Buffer > MaxBuffer || dl.MaxBackups < 0 || dl.MaxBackups > MaxBackups || dl.MaxBytes < 0 {
			t.Fatalf("accepted decision log bounds out of range: %+v", dl)
		}
	})
}
