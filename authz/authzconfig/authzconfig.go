package authzconfig

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/internal/yamlx"
)

// Bounds of values that cannot work outside them.
const (
	MaxBuffer       = 65536                  // decision_log.buffer: decisions held in memory
	MaxBackups      = 1000                   // decision_log.max_backups: files renamed on each rotation
	MinPollInterval = 100 * time.Millisecond // poll_interval: a policy source is not polled faster
	MinGCPercent    = 25                     // gc_percent: lower spends the CPU collecting
)

// File is the YAML schema of authz.yaml.
type File struct {
	Listen        string          `yaml:"listen"`                  // ext_authz gRPC: 127.0.0.1:9191 (default) or unix:///run/sigil/authz.sock
	HealthAddress string          `yaml:"health_address"`          // /live, /ready, /metrics, e.g. 127.0.0.1:9192; empty disables
	PProf         bool            `yaml:"pprof"`                   // also serve /debug/pprof/ on health_address
	DecisionPath  string          `yaml:"decision_path"`           // default envoy/authz/allow
	DryRun        bool            `yaml:"dry_run"`                 // allow everything, log what would happen
	SkipBody      bool            `yaml:"skip_request_body_parse"` // leave parsed_body undefined
	Policy        *PolicyFile     `yaml:"policy"`                  // required: exactly one of dir, bundle_file, bundle_url
	Shadow        *PolicyFile     `yaml:"shadow"`                  // optional candidate policy, evaluated, logged and counted only
	DecisionLog   DecisionLogFile `yaml:"decision_log"`            // hash-chained JSON lines; off unless a sink is set
	GCPercent     *int            `yaml:"gc_percent"`              // Go GC target (default 400, at least 25); GOGC wins
}

// PolicyFile names exactly one policy source.
type PolicyFile struct {
	Dir          string `yaml:"dir"`           // a directory of .rego and data files, hot-reloaded
	BundleFile   string `yaml:"bundle_file"`   // an OPA bundle (.tar.gz)
	BundleURL    string `yaml:"bundle_url"`    // an OPA bundle over HTTP (ETag aware)
	PollInterval string `yaml:"poll_interval"` // default 1s, at least 100ms
}

// DecisionLogFile configures the decision log sinks.
type DecisionLogFile struct {
	File        string   `yaml:"file"`         // log file (0600)
	MaxBytes    int64    `yaml:"max_bytes"`    // rotate beyond this size; 0 never
	MaxBackups  int      `yaml:"max_backups"`  // rotated files kept (default 5, at most 1000)
	Stdout      bool     `yaml:"stdout"`       // also write to stdout
	HTTPURL     string   `yaml:"http_url"`     // OPA-compatible decision log service
	Buffer      int      `yaml:"buffer"`       // decisions waiting to be written, beyond it dropped and counted (default 4096, at most 65536)
	MaskHeaders []string `yaml:"mask_headers"` // headers whose values are masked (default authorization, cookie, ...)
	LogRequest  *bool    `yaml:"log_request"`  // keep the masked request, needed by sigil policy replay (default true)
}

// Config is the validated configuration.
type Config struct {
	Listen        string // host:port or unix:///path
	HealthAddress string // /live, /ready, /metrics; "" disables
	PProf         bool   // also serve Go's profiling handlers on HealthAddress
	DecisionPath  string // normalized, e.g. data.envoy.authz.allow
	DryRun        bool
	SkipBody      bool
	Policy        PolicySource
	Shadow        *PolicySource // nil: no shadow policy
	DecisionLog   DecisionLog
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

// DecisionLog is the validated decision log configuration.
type DecisionLog struct {
	File        string
	MaxBytes    int64
	MaxBackups  int // 0: the file sink's default
	Stdout      bool
	HTTPURL     string
	Buffer      int      // 0: the decision log's default
	MaskHeaders []string // nil: the decision log's default
	LogRequest  bool
}

// Enabled reports whether any sink is configured.
func (c DecisionLog) Enabled() bool { return c.File != "" || c.Stdout || c.HTTPURL != "" }

// DefaultListen is the ext_authz address unless configured.
const DefaultListen = "127.0.0.1:9191"

// Load reads and validates a config file.
func Load(path string) (Config, error) {
	return yamlx.Load[File](path)
}

// Parse decodes YAML strictly and validates it.
func Parse(data []byte) (Config, error) {
	return yamlx.Parse[File](data)
}

// Validate checks every field, fills defaults and returns the typed config.
func (f File) Validate() (Config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	c := Config{
		Listen:        f.Listen,
		HealthAddress: f.HealthAddress,
		PProf:         f.PProf,
		DryRun:        f.DryRun,
		SkipBody:      f.SkipBody,
		GCPercent:     400,
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if rest, unix := strings.CutPrefix(c.Listen, "unix:"); unix {
		if strings.TrimPrefix(rest, "//") == "" {
			bad("listen", "%q: want unix:///path/to/socket", c.Listen)
		}
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q: want host:port or unix:///path/to/socket", c.Listen)
	}
	if f.HealthAddress != "" {
		if _, _, err := net.SplitHostPort(f.HealthAddress); err != nil {
			bad("health_address", "%q: want host:port", f.HealthAddress)
		}
	}
	if f.PProf && f.HealthAddress == "" {
		bad("pprof", "needs health_address")
	}
	if f.GCPercent != nil {
		if *f.GCPercent < MinGCPercent {
			bad("gc_percent", "%d: want at least %d", *f.GCPercent, MinGCPercent)
		}
		c.GCPercent = *f.GCPercent
	}
	path, err := engine.NormalizePath(f.DecisionPath)
	if err != nil {
		bad("decision_path", "%v", err)
	}
	c.DecisionPath = path
	if f.Policy == nil {
		bad("policy", "required (dir, bundle_file or bundle_url)")
	} else {
		c.Policy = f.Policy.validate("policy", bad)
	}
	if f.Shadow != nil {
		s := f.Shadow.validate("shadow", bad)
		c.Shadow = &s
	}
	c.DecisionLog = f.DecisionLog.validate(bad)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return c, nil
}

func (p PolicyFile) validate(key string, bad func(field, format string, args ...any)) PolicySource {
	ps := PolicySource{Dir: p.Dir, BundleFile: p.BundleFile, BundleURL: p.BundleURL, PollInterval: time.Second}
	n := 0
	for _, v := range []string{p.Dir, p.BundleFile, p.BundleURL} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		bad(key, "set exactly one of dir, bundle_file, bundle_url")
	}
	if p.BundleURL != "" && !isHTTPURL(p.BundleURL) {
		bad(key+".bundle_url", "%q: want an http or https URL", p.BundleURL)
	}
	if p.PollInterval != "" {
		d, err := time.ParseDuration(p.PollInterval)
		if err != nil || d < MinPollInterval {
			bad(key+".poll_interval", "%q: want a duration of at least %s, like 1s", p.PollInterval, MinPollInterval)
		}
		ps.PollInterval = d
	}
	return ps
}

func (d DecisionLogFile) validate(bad func(field, format string, args ...any)) DecisionLog {
	if d.MaxBytes < 0 {
		bad("decision_log.max_bytes", "%d: must not be negative", d.MaxBytes)
	}
	if d.MaxBackups < 0 || d.MaxBackups > MaxBackups {
		bad("decision_log.max_backups", "%d: want 0 to %d", d.MaxBackups, MaxBackups)
	}
	if d.Buffer < 0 || d.Buffer > MaxBuffer {
		bad("decision_log.buffer", "%d: want 0 to %d", d.Buffer, MaxBuffer)
	}
	if d.HTTPURL != "" && !isHTTPURL(d.HTTPURL) {
		bad("decision_log.http_url", "%q: want an http or https URL", d.HTTPURL)
	}
	dl := DecisionLog{
		File: d.File, MaxBytes: d.MaxBytes, MaxBackups: d.MaxBackups, Stdout: d.Stdout,
		HTTPURL: d.HTTPURL, Buffer: d.Buffer, MaskHeaders: d.MaskHeaders, LogRequest: true,
	}
	if d.LogRequest != nil {
		dl.LogRequest = *d.LogRequest
	}
	return dl
}

func isHTTPURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}
