package authzconfig

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/internal/yamlx"
)

// Bounds of values that cannot work outside them.
const (
	MaxBuffer       = 65536                  // decision_log.buffer: decisions held in memory
	MaxBackups      = 1000                   // decision_log.max_backups: files renamed on each rotation
	MinPollInterval = 100 * time.Millisecond // poll_interval: a policy source is not polled faster
	MinGCPercent    = 25                     // gc_percent: lower spends the CPU collecting
	MinEvalTimeout  = time.Millisecond       // limits.eval_timeout
	MaxEvalTimeout  = time.Minute            // limits.eval_timeout: longer is no limit
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
	Limits        LimitsFile      `yaml:"limits"`                  // what one Check may cost
	Revocation    *RevocationFile `yaml:"revocation"`              // deny revoked peer certificates (CRLs from the agent's SDS)
}

// RevocationFile turns on the revocation check of peer certificates.
type RevocationFile struct {
	SDSSocket string `yaml:"sds_socket"` // required: the agent socket, unix:///run/sigil/agent.sock; authz follows its SDS validation context like Envoy
	Resource  string `yaml:"resource"`   // validation context name (default ROOTCA)
}

// LimitsFile bounds evaluation.
type LimitsFile struct {
	EvalTimeout        string `yaml:"eval_timeout"`         // per evaluation, waiting for a slot included (default 200ms, Envoy's ext_authz timeout); denied 503 "evaluation timed out"
	MaxConcurrentEvals int    `yaml:"max_concurrent_evals"` // evaluations at once (default 64)
	MaxQueued          int    `yaml:"max_queued"`           // Checks waiting for a slot, beyond it denied at once as overloaded (default 1024)
	MaxBodyBytes       int    `yaml:"max_body_bytes"`       // request body taken into input, beyond it denied 413 (default 1048576)
}

// CheckpointsFile turns on signed checkpoints of the decision log.
type CheckpointsFile struct {
	WorkloadAPISocket string `yaml:"workload_api_socket"` // required: the agent socket authz fetches its X509-SVID from (unix:///run/sigil/agent.sock)
	SignerID          string `yaml:"signer_id"`           // the SVID to sign with when the socket gives several (default: the first)
	File              string `yaml:"file"`                // default: decision_log.file + ".checkpoints"
	Every             int    `yaml:"every"`               // lines per checkpoint (default 1000)
	Interval          string `yaml:"interval"`            // longest wait of a written line for one (default 10s)
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
	File        string           `yaml:"file"`         // log file (0600)
	MaxBytes    int64            `yaml:"max_bytes"`    // rotate beyond this size; 0 never
	MaxBackups  int              `yaml:"max_backups"`  // rotated files kept (default 5, at most 1000)
	Stdout      bool             `yaml:"stdout"`       // also write to stdout
	HTTPURL     string           `yaml:"http_url"`     // OPA-compatible decision log service
	Buffer      int              `yaml:"buffer"`       // decisions waiting to be written, beyond it dropped and counted (default 4096, at most 65536)
	MaskHeaders []string         `yaml:"mask_headers"` // headers whose values are masked (default authorization, cookie, ...)
	LogRequest  *bool            `yaml:"log_request"`  // keep the masked request, needed by sigil policy replay (default true)
	OnFailure   string           `yaml:"on_failure"`   // deny (default): a decision not written is denied 503; allow: dropped and counted
	Sync        bool             `yaml:"sync"`         // fsync every batch of the file (survives power loss, at a cost)
	MaxBody     int              `yaml:"max_body"`     // request body bytes kept in a line (default 4096)
	MaxLine     int              `yaml:"max_line"`     // bytes of one line (default 65536, at least 4096)
	Checkpoints *CheckpointsFile `yaml:"checkpoints"`  // signed checkpoints (needs file); sigil audit verify refuses a log without
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
	Limits        authz.Limits // defaults filled
	// Revocation, if set, denies revoked peer certificates.
	Revocation *Revocation
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
	OnFailure   decisionlog.FailurePolicy
	Sync        bool
	MaxBody     int          // 0: the decision log's default
	MaxLine     int          // 0: the decision log's default
	Checkpoints *Checkpoints // nil: none
}

// Checkpoints is the validated checkpoint configuration.
type Checkpoints struct {
	WorkloadAPISocket string // unix:///path
	SignerID          string // "" or a SPIFFE ID
	File              string
	Every             int
	Interval          time.Duration
}

// Revocation is the validated revocation check configuration.
type Revocation struct {
	SDSSocket string // socket path, without unix://
	Resource  string
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
	if r := f.Revocation; r != nil {
		rest, ok := strings.CutPrefix(r.SDSSocket, "unix://")
		if !ok || rest == "" {
			bad("revocation.sds_socket", "%q: want unix:///path/to/agent.sock, the agent socket whose SDS serves the CRLs", r.SDSSocket)
		}
		c.Revocation = &Revocation{SDSSocket: rest, Resource: r.Resource}
		if c.Revocation.Resource == "" {
			c.Revocation.Resource = "ROOTCA"
		}
	}
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
	c.Limits = f.Limits.validate(bad)
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
		OnFailure: decisionlog.FailDeny, Sync: d.Sync, MaxBody: d.MaxBody, MaxLine: d.MaxLine,
	}
	switch p := decisionlog.FailurePolicy(d.OnFailure); p {
	case "":
	case decisionlog.FailDeny, decisionlog.FailAllow:
		dl.OnFailure = p
	default:
		bad("decision_log.on_failure", "%q: want deny or allow", d.OnFailure)
	}
	if d.Sync && d.File == "" {
		bad("decision_log.sync", "needs decision_log.file")
	}
	maxLine := decisionlog.DefaultMaxLine
	if d.MaxLine < 0 || (d.MaxLine > 0 && d.MaxLine < decisionlog.MinMaxLine) {
		bad("decision_log.max_line", "%d: want at least %d (0 takes the default %d)", d.MaxLine, decisionlog.MinMaxLine, decisionlog.DefaultMaxLine)
	} else if d.MaxLine > 0 {
		maxLine = d.MaxLine
	}
	if d.MaxBody < 0 || d.MaxBody > maxLine {
		bad("decision_log.max_body", "%d: want 0 (default %d) to max_line (%d)", d.MaxBody, decisionlog.DefaultMaxBody, maxLine)
	}
	if c := d.Checkpoints; c != nil {
		cp := &Checkpoints{WorkloadAPISocket: c.WorkloadAPISocket, SignerID: c.SignerID, File: c.File, Every: c.Every, Interval: decisionlog.DefaultCheckpointInterval}
		if d.File == "" {
			bad("decision_log.checkpoints", "needs decision_log.file (the chain continues from it)")
		} else if cp.File == "" {
			cp.File = d.File + ".checkpoints"
		}
		if rest, ok := strings.CutPrefix(c.WorkloadAPISocket, "unix://"); !ok || rest == "" {
			bad("decision_log.checkpoints.workload_api_socket", "%q: want unix:///path/to/agent.sock, the socket authz gets its X509-SVID from", c.WorkloadAPISocket)
		}
		if c.SignerID != "" {
			if _, err := spiffeid.FromString(c.SignerID); err != nil {
				bad("decision_log.checkpoints.signer_id", "%q: %v", c.SignerID, err)
			}
		}
		if c.Every < 0 {
			bad("decision_log.checkpoints.every", "%d: must not be negative (0 takes the default %d)", c.Every, decisionlog.DefaultCheckpointEvery)
		}
		if c.Interval != "" {
			iv, err := time.ParseDuration(c.Interval)
			if err != nil || iv < time.Second {
				bad("decision_log.checkpoints.interval", "%q: want a duration of at least 1s, like 10s", c.Interval)
			}
			cp.Interval = iv
		}
		dl.Checkpoints = cp
	}
	if d.LogRequest != nil {
		dl.LogRequest = *d.LogRequest
	}
	return dl
}

func (l LimitsFile) validate(bad func(field, format string, args ...any)) authz.Limits {
	lim := authz.Limits{
		EvalTimeout: authz.DefaultEvalTimeout, MaxConcurrentEvals: authz.DefaultMaxConcurrentEvals,
		MaxQueued: authz.DefaultMaxQueued, MaxBodyBytes: authz.DefaultMaxBodyBytes,
	}
	if l.EvalTimeout != "" {
		d, err := time.ParseDuration(l.EvalTimeout)
		if err != nil || d < MinEvalTimeout || d > MaxEvalTimeout {
			bad("limits.eval_timeout", "%q: want a duration from %s to %s, like 200ms", l.EvalTimeout, MinEvalTimeout, MaxEvalTimeout)
		}
		lim.EvalTimeout = d
	}
	positive := func(key string, v int, dst *int) {
		if v < 0 {
			bad(key, "%d: must not be negative (0 takes the default)", v)
		} else if v > 0 {
			*dst = v
		}
	}
	positive("limits.max_concurrent_evals", l.MaxConcurrentEvals, &lim.MaxConcurrentEvals)
	positive("limits.max_queued", l.MaxQueued, &lim.MaxQueued)
	positive("limits.max_body_bytes", l.MaxBodyBytes, &lim.MaxBodyBytes)
	return lim
}

func isHTTPURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}
