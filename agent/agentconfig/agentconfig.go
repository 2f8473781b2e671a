package agentconfig

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/sigilhq/sigil/agent/nodeattest"
	"github.com/sigilhq/sigil/agent/socketlimit"
	"github.com/sigilhq/sigil/internal/yamlx"
	"github.com/sigilhq/sigil/sds"
)

// File is the YAML schema of agent.yaml.
type File struct {
	TrustDomain     string       `yaml:"trust_domain"`      // required, e.g. example.org
	ServerAddress   Addresses    `yaml:"server_address"`    // required: host:port of the CA, or a list of them (one per replica; a name may resolve to several)
	DataDir         string       `yaml:"data_dir"`          // required: the agent's persisted identity (0700)
	SVIDDir         string       `yaml:"svid_dir"`          // where workloads' entries and X509-SVIDs (with their keys, file mode 0600) are kept across restarts, so a restart while the CA is down still serves them (default data_dir)
	SocketPath      string       `yaml:"socket_path"`       // Workload API + SDS socket (default DATA_DIR/agent.sock); its directory must be reachable by workloads
	TrustBundleFile string       `yaml:"trust_bundle_file"` // PEM roots to trust the CA by before the first attestation
	JoinToken       string       `yaml:"join_token"`        // node attestation with a one-time token from `sigil token create`
	X509PoP         *X509PoPFile `yaml:"x509pop"`           // or node attestation with an existing node certificate
	K8sPSAT         *K8sPSATFile `yaml:"k8s_psat"`          // or node attestation with the pod's projected service account token (Kubernetes)
	WorkloadKeyType string       `yaml:"workload_key_type"` // keys made for workloads: ec-p256 (default) | ec-p384 | rsa-2048
	HealthAddress   string       `yaml:"health_address"`    // /live, /ready, /metrics; empty disables
	PProf           bool         `yaml:"pprof"`             // also serve /debug/pprof/ on health_address
	GCPercent       *int         `yaml:"gc_percent"`        // Go's GC runs when the heap grew this many percent over live data (default 25: the agent holds much and allocates little once its SVIDs are minted; Go's own default 100 nearly doubles its memory); GOGC in the environment overrides it
	Limits          LimitsFile   `yaml:"limits"`            // what callers of the socket may hold; past a limit a call is refused with ResourceExhausted naming it
	// WorkloadAttestors adds attestors beside unix (always on).
	WorkloadAttestors WorkloadAttestorsFile `yaml:"workload_attestors"`
}

// WorkloadAttestorsFile configures the workload attestors beyond unix.
type WorkloadAttestorsFile struct {
	K8s *K8sFile `yaml:"k8s"` // Kubernetes pods on this node; `k8s: {}` turns it on with defaults (in-cluster, NODE_NAME)
}

// K8sFile configures the k8s workload attestor.
type K8sFile struct {
	Kubeconfig string `yaml:"kubeconfig"` // kubeconfig file to watch pods with; empty: the pod's in-cluster service account
	NodeName   string `yaml:"node_name"`  // this node's name; empty: the NODE_NAME environment variable (set it from spec.nodeName)
	Wait       string `yaml:"wait"`       // how long to wait for a container the pod watch has not seen yet before refusing it (default 5s)
	ProcDir    string `yaml:"proc_dir"`   // where the host's procfs is mounted (default /proc; the agent needs hostPID)
}

// LimitsFile bounds what the callers of the agent socket may make the agent
// hold. Counted per uid: a caller chooses its pids, not its uid.
type LimitsFile struct {
	MaxStreamsPerUID     *int   `yaml:"max_streams_per_uid"`          // Workload API and SDS calls (streams, unary calls in flight) one uid may hold open (default 1024; raise it where many workloads share a uid)
	MaxStreams           *int   `yaml:"max_streams"`                  // calls open on the socket in total (default 4096; a pending SDS stream costs about 28 KB)
	MaxConnectionsPerUID *int   `yaml:"max_connections_per_uid"`      // connections one uid may hold; more are closed at once (default 256)
	MaxConnections       *int   `yaml:"max_connections"`              // connections in total (default 1024)
	JWTSVIDsPerSecond    *int   `yaml:"jwt_svids_per_second_per_uid"` // FetchJWTSVID calls per second one uid may make, each maybe a mint on the CA (default 20)
	JWTSVIDBurst         *int   `yaml:"jwt_svid_burst_per_uid"`       // FetchJWTSVID calls one uid may make at once before the rate applies (default 50)
	SDSPendingTimeout    string `yaml:"sds_pending_timeout"`          // an SDS stream that serves nothing it asks for (no entry for the caller, unknown names) is closed with NotFound after this long (default 5m)
}

// X509PoPFile names the node's certificate and key for x509pop attestation.
type X509PoPFile struct {
	CertFile string `yaml:"cert_file"` // PEM: node certificate, then intermediates
	KeyFile  string `yaml:"key_file"`  // PEM private key of the node certificate (0600)
}

// K8sPSATFile configures node attestation with a projected service account
// token: the agent runs in a pod of a DaemonSet that mounts a token for
// audience sigil (the CA's node_attestation.k8s_psat names the audience).
type K8sPSATFile struct {
	Cluster   string `yaml:"cluster"`    // required: the cluster's name in the CA's node_attestation.k8s_psat.clusters
	TokenPath string `yaml:"token_path"` // projected token file, read again on each attestation (default /var/run/secrets/tokens/sigil-agent)
}

// Config is the validated configuration.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// ServerAddress is the first of ServerAddresses, the host:port of the
	// CA's node API on each replica.
	ServerAddress   string
	ServerAddresses []string
	DataDir         string // the agent's persisted identity; created 0700
	SVIDDir         string // workloads' persisted entries and SVIDs; default DataDir
	SocketPath      string // Workload API socket; default DATA_DIR/agent.sock
	// TrustBundleFile holds the PEM roots the agent trusts the CA by before
	// it has a persisted bundle; "" means a persisted bundle must exist.
	TrustBundleFile string
	// JoinToken, X509PoP and K8sPSAT choose the node attestor; at most one
	// is set. None: the agent runs only on a persisted identity and cannot
	// attest again.
	JoinToken       string
	X509PoP         *X509PoP
	K8sPSAT         *K8sPSAT
	WorkloadKeyType KeyType
	HealthAddress   string // /live, /ready, /metrics; "" disables
	PProf           bool   // also serve /debug/pprof/ on HealthAddress
	GCPercent       int    // Go GC target of the agent process (runtime/debug.SetGCPercent); cmd sets it unless GOGC is set
	Limits          Limits
	// K8s, if set, turns on the k8s workload attestor.
	K8s *K8s
}

// K8s is the validated k8s workload attestor configuration.
type K8s struct {
	// Kubeconfig is a kubeconfig file; "" means in-cluster.
	Kubeconfig string
	// NodeName is this node's name; "" means from NODE_NAME (read by cmd).
	NodeName string
	// Wait bounds the wait for a container the watch has not seen.
	Wait    time.Duration
	ProcDir string // "" means /proc
}

// DefaultGCPercent is the agent's Go GC target: its heap may grow 25%
// over live data (mostly cached SVIDs) before a GC, not Go's default 100%.
// Once its SVIDs are minted the agent allocates little, so the extra GC
// cycles cost little CPU.
const DefaultGCPercent = 25

// DefaultK8sWait is the k8s attestor's default wait.
const DefaultK8sWait = 5 * time.Second

// Limits are the validated socket limits, defaults filled in.
type Limits struct {
	MaxStreamsPerUID     int
	MaxStreams           int
	MaxConnectionsPerUID int
	MaxConnections       int
	JWTSVIDsPerSecond    int
	JWTSVIDBurst         int
	SDSPendingTimeout    time.Duration
}

// X509PoP is the node certificate (chain, leaf first) and its key.
type X509PoP struct {
	CertFile string
	KeyFile  string
}

// K8sPSAT is the cluster name and the projected token file.
type K8sPSAT struct {
	Cluster   string
	TokenPath string
}

// KeyType is the kind of key the agent generates for workloads.
type KeyType string

// Workload key types.
const (
	KeyECP256  KeyType = "ec-p256"
	KeyECP384  KeyType = "ec-p384"
	KeyRSA2048 KeyType = "rsa-2048"
)

// Load reads and validates a config file. Relative paths in it are taken
// relative to the file's directory.
func Load(path string) (Config, error) {
	cfg, err := yamlx.Load[File](path)
	if err != nil {
		return Config{}, err
	}
	return cfg.relativeTo(filepath.Dir(path)), nil
}

// Parse decodes YAML strictly and validates it.
func Parse(data []byte) (Config, error) {
	return yamlx.Parse[File](data)
}

// Validate checks every field and fills defaults.
func (f File) Validate() (Config, error) {
	var cfg Config
	if f.TrustDomain == "" {
		return cfg, errors.New("trust_domain is required")
	}
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return cfg, fmt.Errorf("trust_domain %q: %w", f.TrustDomain, err)
	}
	cfg.TrustDomain = td
	addrs, err := f.ServerAddress.validate()
	if err != nil {
		return cfg, err
	}
	cfg.ServerAddress, cfg.ServerAddresses = addrs[0], addrs
	if f.DataDir == "" {
		return cfg, errors.New("data_dir is required")
	}
	cfg.DataDir = f.DataDir
	cfg.SVIDDir = f.SVIDDir
	if cfg.SVIDDir == "" {
		cfg.SVIDDir = f.DataDir
	}
	cfg.SocketPath = f.SocketPath
	if cfg.SocketPath == "" {
		cfg.SocketPath = filepath.Join(f.DataDir, "agent.sock")
	}
	cfg.TrustBundleFile = f.TrustBundleFile
	cfg.JoinToken = f.JoinToken
	if f.X509PoP != nil {
		if f.JoinToken != "" {
			return cfg, errors.New("join_token and x509pop are both set: choose one node attestor")
		}
		if f.X509PoP.CertFile == "" {
			return cfg, errors.New("x509pop.cert_file is required")
		}
		if f.X509PoP.KeyFile == "" {
			return cfg, errors.New("x509pop.key_file is required")
		}
		cfg.X509PoP = &X509PoP{CertFile: f.X509PoP.CertFile, KeyFile: f.X509PoP.KeyFile}
	}
	if f.K8sPSAT != nil {
		if f.JoinToken != "" || f.X509PoP != nil {
			return cfg, errors.New("k8s_psat is set beside join_token or x509pop: choose one node attestor")
		}
		if err := checkClusterName(f.K8sPSAT.Cluster); err != nil {
			return cfg, fmt.Errorf("k8s_psat.cluster: %w", err)
		}
		cfg.K8sPSAT = &K8sPSAT{Cluster: f.K8sPSAT.Cluster, TokenPath: f.K8sPSAT.TokenPath}
		if cfg.K8sPSAT.TokenPath == "" {
			cfg.K8sPSAT.TokenPath = nodeattest.DefaultPSATTokenPath
		}
	}
	switch kt := KeyType(f.WorkloadKeyType); kt {
	case "":
		cfg.WorkloadKeyType = KeyECP256
	case KeyECP256, KeyECP384, KeyRSA2048:
		cfg.WorkloadKeyType = kt
	default:
		return cfg, fmt.Errorf("workload_key_type %q: want %s, %s or %s", f.WorkloadKeyType, KeyECP256, KeyECP384, KeyRSA2048)
	}
	if f.HealthAddress != "" {
		if _, _, err := net.SplitHostPort(f.HealthAddress); err != nil {
			return cfg, fmt.Errorf("health_address %q: want host:port", f.HealthAddress)
		}
	}
	cfg.HealthAddress = f.HealthAddress
	if f.PProf && f.HealthAddress == "" {
		return cfg, errors.New("pprof: needs health_address")
	}
	cfg.PProf = f.PProf
	cfg.GCPercent = DefaultGCPercent
	if f.GCPercent != nil {
		if *f.GCPercent < 10 || *f.GCPercent > 1000 {
			return cfg, fmt.Errorf("gc_percent is %d: want 10 to 1000", *f.GCPercent)
		}
		cfg.GCPercent = *f.GCPercent
	}
	lim, err := f.Limits.validate()
	if err != nil {
		return cfg, err
	}
	cfg.Limits = lim
	if f.WorkloadAttestors.K8s != nil {
		k, err := f.WorkloadAttestors.K8s.validate()
		if err != nil {
			return cfg, err
		}
		cfg.K8s = k
	}
	return cfg, nil
}

// MaxServerAddresses bounds the server_address list.
const MaxServerAddresses = 32

// Addresses is server_address: one host:port, or a list of them.
type Addresses []string

// UnmarshalYAML takes a string or a list of strings.
func (a *Addresses) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*a = Addresses{s}
		return nil
	case yaml.SequenceNode:
		l := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: server_address[%d]: want host:port", item.Line, i)
			}
			l = append(l, item.Value)
		}
		*a = l
		return nil
	}
	return fmt.Errorf("line %d: server_address: want host:port or a list of host:port", n.Line)
}

func (a Addresses) validate() ([]string, error) {
	if len(a) == 0 || (len(a) == 1 && a[0] == "") {
		return nil, errors.New("server_address is required: host:port of the CA, or a list of them, one per CA replica")
	}
	if len(a) > MaxServerAddresses {
		return nil, fmt.Errorf("server_address lists %d addresses: at most %d", len(a), MaxServerAddresses)
	}
	seen := map[string]bool{}
	for i, hp := range a {
		key := "server_address"
		if len(a) > 1 {
			key = fmt.Sprintf("server_address[%d]", i)
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil || host == "" {
			return nil, fmt.Errorf("%s %q: want host:port, e.g. ca-1.example.org:8443", key, hp)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s %q: port %q is not a number from 1 to 65535", key, hp, port)
		}
		if seen[hp] {
			return nil, fmt.Errorf("%s %q: listed twice", key, hp)
		}
		seen[hp] = true
	}
	return slices.Clone(a), nil
}

func (f K8sFile) validate() (*K8s, error) {
	k := &K8s{Kubeconfig: f.Kubeconfig, NodeName: f.NodeName, Wait: DefaultK8sWait, ProcDir: f.ProcDir}
	if f.NodeName != "" && !nodeName(f.NodeName) {
		return nil, fmt.Errorf("workload_attestors.k8s.node_name %q: want a Kubernetes node name (lowercase letters, digits, '-' and '.', at most 253)", f.NodeName)
	}
	if f.Wait != "" {
		d, err := time.ParseDuration(f.Wait)
		if err != nil {
			return nil, fmt.Errorf("workload_attestors.k8s.wait %q: want a duration such as 5s", f.Wait)
		}
		if d < 100*time.Millisecond || d > time.Minute {
			return nil, fmt.Errorf("workload_attestors.k8s.wait %s: want between 100ms and 1m (a workload's call waits this long)", d)
		}
		k.Wait = d
	}
	if f.ProcDir != "" && !filepath.IsAbs(f.ProcDir) {
		return nil, fmt.Errorf("workload_attestors.k8s.proc_dir %q: want an absolute path", f.ProcDir)
	}
	return k, nil
}

// nodeName reports whether s is a DNS subdomain, as node names are.
func nodeName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func (f LimitsFile) validate() (Limits, error) {
	l := Limits{SDSPendingTimeout: sds.DefaultPendingTimeout}
	for _, v := range []struct {
		key string
		in  *int
		out *int
		def int
	}{
		{"max_streams_per_uid", f.MaxStreamsPerUID, &l.MaxStreamsPerUID, socketlimit.DefaultStreamsPerUID},
		{"max_streams", f.MaxStreams, &l.MaxStreams, socketlimit.DefaultStreams},
		{"max_connections_per_uid", f.MaxConnectionsPerUID, &l.MaxConnectionsPerUID, socketlimit.DefaultConnsPerUID},
		{"max_connections", f.MaxConnections, &l.MaxConnections, socketlimit.DefaultConns},
		{"jwt_svids_per_second_per_uid", f.JWTSVIDsPerSecond, &l.JWTSVIDsPerSecond, socketlimit.DefaultJWTSVIDRate},
		{"jwt_svid_burst_per_uid", f.JWTSVIDBurst, &l.JWTSVIDBurst, socketlimit.DefaultJWTSVIDBurst},
	} {
		*v.out = v.def
		if v.in == nil {
			continue
		}
		if *v.in < 1 {
			return l, fmt.Errorf("limits.%s is %d: want at least 1", v.key, *v.in)
		}
		*v.out = *v.in
	}
	if f.SDSPendingTimeout != "" {
		d, err := time.ParseDuration(f.SDSPendingTimeout)
		if err != nil {
			return l, fmt.Errorf("limits.sds_pending_timeout %q: want a duration such as 5m", f.SDSPendingTimeout)
		}
		if d < time.Second {
			return l, fmt.Errorf("limits.sds_pending_timeout %s: want at least 1s", d)
		}
		l.SDSPendingTimeout = d
	}
	return l, nil
}

// relativeTo resolves relative file paths against dir.
func (c Config) relativeTo(dir string) Config {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c.DataDir = abs(c.DataDir)
	c.SVIDDir = abs(c.SVIDDir)
	c.SocketPath = abs(c.SocketPath)
	c.TrustBundleFile = abs(c.TrustBundleFile)
	if c.X509PoP != nil {
		c.X509PoP = &X509PoP{CertFile: abs(c.X509PoP.CertFile), KeyFile: abs(c.X509PoP.KeyFile)}
	}
	if c.K8sPSAT != nil {
		c.K8sPSAT = &K8sPSAT{Cluster: c.K8sPSAT.Cluster, TokenPath: abs(c.K8sPSAT.TokenPath)}
	}
	if c.K8s != nil {
		k := *c.K8s
		k.Kubeconfig = abs(k.Kubeconfig)
		c.K8s = &k
	}
	return c
}

// checkClusterName accepts what can be one segment of a SPIFFE ID path
// (the agent ID is spiffe://TD/sigil/agent/k8s_psat/<cluster>/<node-uid>).
func checkClusterName(name string) error {
	if name == "" {
		return errors.New("required (the cluster's name in the CA's node_attestation.k8s_psat.clusters)")
	}
	if len(name) > 63 {
		return fmt.Errorf("%q is longer than 63 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%q: use letters, digits, '-', '_' and '.' only", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%q is not a valid name", name)
	}
	return nil
}
