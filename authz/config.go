package authz

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sigilhq/sigil/authz/engine"
)

// FileConfig is the schema of authz.yaml. Unknown keys are errors that
// name the key and its line. Every key, with its default:
//
//	listen: 127.0.0.1:9191          # or unix:///run/sigil/authz.sock
//	metrics_listen: ""              # e.g. 127.0.0.1:9192: /metrics, /live, /ready
//	pprof: false                    # also serve /debug/pprof/ on metrics_listen
//	decision_path: envoy/authz/allow
//	dry_run: false                  # allow everything, log what would happen
//	skip_request_body_parse: false
//	gc_percent: 400                 # Go GC target; GOGC wins
//	policy:                         # exactly one of dir, bundle_file, bundle_url
//	  dir: /etc/sigil/policies
//	  poll_interval: 1s
//	shadow:                         # optional candidate, logged and counted only
//	  bundle_url: https://bundles.example.org/authz.tar.gz
//	decision_log:
//	  file: /var/log/sigil/decisions.log
//	  max_bytes: 0                  # rotate beyond this size; 0 never
//	  max_backups: 5
//	  stdout: false
//	  http_url: ""                  # OPA-compatible decision log service
//	  buffer: 4096                  # decisions waiting; beyond it, dropped and counted
//	  mask_headers: [authorization, proxy-authorization, cookie, set-cookie, x-api-key, x-auth-token]
//	  log_request: true             # needed by sigil policy replay
type FileConfig struct {
	Listen        string            `yaml:"listen"`                  // 127.0.0.1:9191 (default) or unix:///run/sigil/authz.sock
	MetricsListen string            `yaml:"metrics_listen"`          // /metrics, /live, /ready, e.g. 127.0.0.1:9192; empty disables
	PProf         bool              `yaml:"pprof"`                   // also serve /debug/pprof/ on metrics_listen
	DecisionPath  string            `yaml:"decision_path"`           // default envoy/authz/allow
	DryRun        bool              `yaml:"dry_run"`                 // allow everything, log what would happen
	SkipBody      bool              `yaml:"skip_request_body_parse"` // leave parsed_body undefined
	Policy        *FilePolicySource `yaml:"policy"`                  // exactly one of dir, bundle_file, bundle_url
	Shadow        *FilePolicySource `yaml:"shadow"`                  // optional candidate policy, evaluated, logged and counted only
	DecisionLog   *FileDecisionLog  `yaml:"decision_log"`            // hash-chained JSON lines
	GCPercent     *int              `yaml:"gc_percent"`              // Go GC target (default 400); GOGC wins
}

// FilePolicySource names exactly one policy source.
type FilePolicySource struct {
	Dir          string `yaml:"dir"`           // a directory of .rego and data files, hot-reloaded
	BundleFile   string `yaml:"bundle_file"`   // an OPA bundle (.tar.gz)
	BundleURL    string `yaml:"bundle_url"`    // an OPA bundle over HTTP (ETag aware)
	PollInterval string `yaml:"poll_interval"` // default 1s
}

// FileDecisionLog configures the decision log sinks.
type FileDecisionLog struct {
	File        string   `yaml:"file"`         // log file (0600)
	MaxBytes    int64    `yaml:"max_bytes"`    // rotate beyond this size; 0 never
	MaxBackups  int      `yaml:"max_backups"`  // rotated files kept (default 5)
	Stdout      bool     `yaml:"stdout"`       // also write to stdout
	HTTPURL     string   `yaml:"http_url"`     // OPA-compatible decision log service
	Buffer      int      `yaml:"buffer"`       // decisions waiting to be written; beyond it dropped and counted (default 4096)
	MaskHeaders []string `yaml:"mask_headers"` // headers whose values are masked (default authorization, cookie, ...)
	LogRequest  *bool    `yaml:"log_request"`  // keep the masked request, needed by sigil policy replay (default true)
}

// RunConfig is the validated configuration.
type RunConfig struct {
	Listen        string
	MetricsListen string
	// PProf serves Go's profiling handlers on MetricsListen.
	PProf        bool
	DecisionPath string
	DryRun       bool
	SkipBody     bool
	Policy       PolicySource
	Shadow       *PolicySource
	DecisionLog  DecisionLogConfig
	// GCPercent is the Go GC target for a dedicated authz process
	// (default 400: the live heap is a few MB, so the default 100 collects
	// very often under load). The GOGC environment variable wins.
	GCPercent int
}

// PolicySource is one of Dir, BundleFile or BundleURL.
type PolicySource struct {
	Dir, BundleFile, BundleURL string
	PollInterval               time.Duration
}

// DecisionLogConfig is the validated decision log configuration.
type DecisionLogConfig struct {
	File        string
	MaxBytes    int64
	MaxBackups  int
	Stdout      bool
	HTTPURL     string
	Buffer      int
	MaskHeaders []string
	LogRequest  bool
}

// Enabled reports whether any sink is configured.
func (c DecisionLogConfig) Enabled() bool { return c.File != "" || c.Stdout || c.HTTPURL != "" }

// DefaultListen is the ext_authz address unless configured.
const DefaultListen = "127.0.0.1:9191"

// ParseConfig decodes authz.yaml strictly and validates it.
func ParseConfig(r io.Reader) (RunConfig, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return RunConfig{}, fmt.Errorf("read config: %w", err)
	}
	var fc FileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return RunConfig{}, fmt.Errorf("config: %s", strings.TrimPrefix(strings.ReplaceAll(err.Error(), "\n ", ""), "yaml: "))
	}
	return fc.Validate()
}

// Validate checks fc and fills defaults.
func (fc FileConfig) Validate() (RunConfig, error) {
	rc := RunConfig{
		Listen:        fc.Listen,
		MetricsListen: fc.MetricsListen,
		PProf:         fc.PProf,
		DryRun:        fc.DryRun,
		SkipBody:      fc.SkipBody,
	}
	if rc.Listen == "" {
		rc.Listen = DefaultListen
	}
	if rc.PProf && rc.MetricsListen == "" {
		return rc, errors.New("config pprof: needs metrics_listen")
	}
	rc.GCPercent = 400
	if fc.GCPercent != nil {
		if *fc.GCPercent < 25 {
			return rc, fmt.Errorf("config gc_percent %d: want at least 25", *fc.GCPercent)
		}
		rc.GCPercent = *fc.GCPercent
	}
	path, err := engine.NormalizePath(fc.DecisionPath)
	if err != nil {
		return rc, fmt.Errorf("config decision_path: %w", err)
	}
	rc.DecisionPath = path
	if fc.Policy == nil {
		return rc, errors.New("config: policy is required (dir, bundle_file or bundle_url)")
	}
	if rc.Policy, err = fc.Policy.validate("policy"); err != nil {
		return rc, err
	}
	if fc.Shadow != nil {
		s, err := fc.Shadow.validate("shadow")
		if err != nil {
			return rc, err
		}
		rc.Shadow = &s
	}
	if dl := fc.DecisionLog; dl != nil {
		if dl.MaxBytes < 0 || dl.MaxBackups < 0 || dl.Buffer < 0 {
			return rc, errors.New("config decision_log: max_bytes, max_backups and buffer must not be negative")
		}
		rc.DecisionLog = DecisionLogConfig{
			File: dl.File, MaxBytes: dl.MaxBytes, MaxBackups: dl.MaxBackups, Stdout: dl.Stdout,
			HTTPURL: dl.HTTPURL, Buffer: dl.Buffer, MaskHeaders: dl.MaskHeaders, LogRequest: true,
		}
		if dl.LogRequest != nil {
			rc.DecisionLog.LogRequest = *dl.LogRequest
		}
		if dl.HTTPURL != "" && !strings.HasPrefix(dl.HTTPURL, "http://") && !strings.HasPrefix(dl.HTTPURL, "https://") {
			return rc, fmt.Errorf("config decision_log.http_url %q: want an http or https URL", dl.HTTPURL)
		}
	}
	return rc, nil
}

func (s FilePolicySource) validate(key string) (PolicySource, error) {
	ps := PolicySource{Dir: s.Dir, BundleFile: s.BundleFile, BundleURL: s.BundleURL, PollInterval: time.Second}
	n := 0
	for _, v := range []string{s.Dir, s.BundleFile, s.BundleURL} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return ps, fmt.Errorf("config %s: set exactly one of dir, bundle_file, bundle_url", key)
	}
	if s.BundleURL != "" && !strings.HasPrefix(s.BundleURL, "http://") && !strings.HasPrefix(s.BundleURL, "https://") {
		return ps, fmt.Errorf("config %s.bundle_url %q: want an http or https URL", key, s.BundleURL)
	}
	if s.PollInterval != "" {
		d, err := time.ParseDuration(s.PollInterval)
		if err != nil || d <= 0 {
			return ps, fmt.Errorf("config %s.poll_interval %q: want a positive duration like 1s", key, s.PollInterval)
		}
		ps.PollInterval = d
	}
	return ps, nil
}
