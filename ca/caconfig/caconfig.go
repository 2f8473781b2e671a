package caconfig

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/internal/yamlx"
)

// File is the YAML schema of ca.yaml.
type File struct {
	TrustDomain   string         `yaml:"trust_domain"`        // required, e.g. example.org
	DataDir       string         `yaml:"data_dir"`            // required; keys, root certificate, SQLite database, admin socket (0700)
	InstanceID    string         `yaml:"instance_id"`         // names this replica's key journal; distinct per replica on a shared store (default primary)
	AdminSocket   string         `yaml:"admin_socket"`        // local admin API, mode 0600 (default DATA_DIR/admin.sock)
	ServerAddress string         `yaml:"server_address"`      // node API and admin API over mTLS, e.g. 0.0.0.0:8443; empty disables
	HealthAddress string         `yaml:"health_address"`      // /live, /ready, /metrics, e.g. 127.0.0.1:9988; empty disables
	PProf         bool           `yaml:"pprof"`               // also serve /debug/pprof/ on health_address
	KeyType       string         `yaml:"key_type"`            // CA keys: ec-p256 (default) | ec-p384 | rsa-2048 | rsa-3072 | rsa-4096
	CATTL         string         `yaml:"ca_ttl"`              // signing key life; prepared at 1/2, activated at 5/6 (default 24h)
	X509SVIDTTL   string         `yaml:"x509_svid_ttl"`       // default 1h
	JWTSVIDTTL    string         `yaml:"jwt_svid_ttl"`        // default 5m
	JWTIssuer     string         `yaml:"jwt_issuer"`          // optional iss claim of JWT-SVIDs
	RefreshHint   string         `yaml:"bundle_refresh_hint"` // spiffe_refresh_hint of the published bundle (default 5m)
	Store         StoreFile      `yaml:"store"`               // where entries, agents, bundles and the journal live
	KeyManager    KeyManagerFile `yaml:"key_manager"`         // where the CA's private keys live
	Upstream      UpstreamFile   `yaml:"upstream"`            // who signs the CA's signing certificates

	NodeAttestation NodeAttestationFile `yaml:"node_attestation"` // how agents prove their nodes

	// ConsoleAddress serves the read-only web console over HTTPS to
	// clients with an admin X509-SVID, e.g. 0.0.0.0:8444; empty disables.
	ConsoleAddress string         `yaml:"console_address"`
	Kubernetes     KubernetesFile `yaml:"kubernetes"` // auto-registration of pods; empty cluster disables

	// OIDCDiscovery serves /.well-known/openid-configuration and a JWKS
	// for JWT-SVIDs under jwt_issuer; opt-in.
	OIDCDiscovery OIDCDiscoveryFile `yaml:"oidc_discovery"`

	Federation FederationFile `yaml:"federation"` // SPIFFE federation: our bundle endpoint and federated trust domains
}

// FederationFile configures SPIFFE federation.
type FederationFile struct {
	BundleEndpoint BundleEndpointFile `yaml:"bundle_endpoint"` // off unless address is set
	MinRefresh     string             `yaml:"min_refresh"`     // lower bound on a peer's refresh hint; retry delay after a failure (default 30s)
	MaxRefresh     string             `yaml:"max_refresh"`     // upper bound on a peer's refresh hint (default 1h)
	Relationships  []RelationshipFile `yaml:"relationships"`
}

// BundleEndpointFile configures the bundle endpoint the CA serves.
type BundleEndpointFile struct {
	Address  string `yaml:"address"`   // e.g. 0.0.0.0:8441; empty disables
	Profile  string `yaml:"profile"`   // https_spiffe (default: the CA's SVID) | https_web
	CertFile string `yaml:"cert_file"` // https_web: Web PKI certificate chain (PEM)
	KeyFile  string `yaml:"key_file"`  // https_web: its private key (PEM)
}

// RelationshipFile is one federated trust domain.
type RelationshipFile struct {
	TrustDomain       string `yaml:"trust_domain"`
	BundleEndpointURL string `yaml:"bundle_endpoint_url"`
	Profile           string `yaml:"profile"`            // https_spiffe | https_web
	EndpointSPIFFEID  string `yaml:"endpoint_spiffe_id"` // https_spiffe
	BundleFile        string `yaml:"bundle_file"`        // initial bundle (SPIFFE format), stored when none is
	WebRootsFile      string `yaml:"web_roots_file"`     // https_web: PEM CA certificates instead of the system roots
}

// OIDCDiscoveryFile configures OIDC discovery for JWT-SVIDs. The issuer is
// jwt_issuer, which must then be the URL clients reach this address by.
type OIDCDiscoveryFile struct {
	Address  string `yaml:"address"`   // e.g. 0.0.0.0:8445; empty disables
	CertFile string `yaml:"cert_file"` // HTTPS certificate (Web PKI) for the issuer's host; empty: plain HTTP behind a TLS proxy
	KeyFile  string `yaml:"key_file"`  // its key (PEM)
}

// KubernetesFile configures auto-registration: entries for pods from
// SigilIdentity templates, made by the one replica holding a Lease.
type KubernetesFile struct {
	Cluster         string `yaml:"cluster"`          // names the cluster in agent IDs (as k8s_psat does); empty disables
	Kubeconfig      string `yaml:"kubeconfig"`       // default: in-cluster service account
	DefaultIdentity *bool  `yaml:"default_identity"` // spiffe://TD/ns/NS/sa/SA for pods no SigilIdentity matches (default true)
	LeaseNamespace  string `yaml:"lease_namespace"`  // default sigil
	LeaseName       string `yaml:"lease_name"`       // default sigil-ca-registrar
}

// NodeAttestationFile configures how agents prove their nodes. Join tokens
// are always accepted; x509pop is enabled by naming its roots, k8s_psat by
// naming at least one cluster.
type NodeAttestationFile struct {
	AgentSVIDTTL string      `yaml:"agent_svid_ttl"` // default: x509_svid_ttl
	X509PoP      X509PoPFile `yaml:"x509pop"`
	K8sPSAT      K8sPSATFile `yaml:"k8s_psat"`
}

// K8sPSATFile configures node attestation by projected service account
// tokens of agents running in Kubernetes pods.
type K8sPSATFile struct {
	Clusters map[string]K8sClusterFile `yaml:"clusters"` // cluster name (as in the agent's k8s_psat.cluster) → how to reach it
}

// K8sClusterFile is one cluster whose agents may attest by k8s_psat. The CA
// needs create on tokenreviews and get on pods and nodes there.
type K8sClusterFile struct {
	Kubeconfig             string   `yaml:"kubeconfig"`               // kubeconfig file for the cluster's API server (or set in_cluster)
	InCluster              bool     `yaml:"in_cluster"`               // the CA runs in this cluster: use its pod's service account
	AllowedServiceAccounts []string `yaml:"allowed_service_accounts"` // required: the agents' service accounts, "namespace:name"
	Audience               string   `yaml:"audience"`                 // the audience of the agents' projected tokens (default sigil)
}

// X509PoPFile configures x509pop node attestation.
type X509PoPFile struct {
	RootsFile string `yaml:"roots_file"` // PEM bundle of CA certificates node certificates must chain to
}

// StoreFile selects the datastore.
type StoreFile struct {
	Type string `yaml:"type"` // sqlite (default) | postgres
	Path string `yaml:"path"` // sqlite file; default DATA_DIR/sigil.db
	DSN  string `yaml:"dsn"`  // postgres connection string
}

// KeyManagerFile selects where the CA's private keys live.
type KeyManagerFile struct {
	Type string `yaml:"type"` // disk (default) | pkcs11 | memory
	Dir  string `yaml:"dir"`  // disk: default DATA_DIR/keys
	URI  string `yaml:"uri"`  // pkcs11: pkcs11:module-path=...;token=...?pin-value=...
}

// UpstreamFile selects who signs the CA's signing certificates.
type UpstreamFile struct {
	Type       string `yaml:"type"`        // self_signed (default) | disk | step_ca
	RootTTL    string `yaml:"root_ttl"`    // self_signed: default 8760h
	CertFile   string `yaml:"cert_file"`   // disk
	KeyFile    string `yaml:"key_file"`    // disk
	BundleFile string `yaml:"bundle_file"` // disk

	URL          string `yaml:"url"`           // step_ca: https://host:port of step-ca
	Root         string `yaml:"root"`          // step_ca: SHA-256 fingerprint of step-ca's root (hex), or a PEM file of its root(s)
	Provisioner  string `yaml:"provisioner"`   // step_ca: JWK or X5C provisioner name
	PasswordFile string `yaml:"password_file"` // step_ca JWK: decrypts the provisioner key
	JWKKeyFile   string `yaml:"jwk_key_file"`  // step_ca JWK: the encrypted provisioner key; default: fetched from step-ca
	X5CCertFile  string `yaml:"x5c_cert_file"` // step_ca X5C: certificate chain to the provisioner's roots
	X5CKeyFile   string `yaml:"x5c_key_file"`  // step_ca X5C: its key (PEM)
}

// Config is the validated configuration.
type Config struct {
	TrustDomain   spiffeid.TrustDomain
	DataDir       string
	InstanceID    string
	AdminSocket   string
	ServerAddress string // admin mTLS (and, later, node API); "" disables
	HealthAddress string // /live, /ready, /metrics; "" disables
	PProf         bool   // also serve /debug/pprof/ on HealthAddress
	KeyType       keys.Type
	CATTL         time.Duration
	X509SVIDTTL   time.Duration
	JWTSVIDTTL    time.Duration
	JWTIssuer     string
	RefreshHint   time.Duration
	Store         Store
	KeyManager    KeyManager
	Upstream      Upstream

	NodeAttestation NodeAttestation

	// ConsoleAddress is the web console (HTTPS, admin SVID); "" disables.
	ConsoleAddress string
	Kubernetes     Kubernetes

	// OIDC discovery for JWT-SVIDs under JWTIssuer; Address "" disables.
	OIDC OIDCDiscovery

	Federation Federation
}

// Federation is the validated federation config.
type Federation struct {
	BundleEndpoint         BundleEndpointFile // Address "" disables
	MinRefresh, MaxRefresh time.Duration
	Relationships          []RelationshipFile
}

// OIDCDiscovery is the validated OIDC discovery config.
type OIDCDiscovery struct {
	Address           string
	CertFile, KeyFile string // both empty: plain HTTP
}

// Kubernetes is the validated auto-registration config.
type Kubernetes struct {
	Cluster         string // "" disables auto-registration
	Kubeconfig      string // "" means in-cluster
	DefaultIdentity bool
	LeaseNamespace  string
	LeaseName       string
}

// NodeAttestation is the validated node attestation config.
type NodeAttestation struct {
	AgentSVIDTTL     time.Duration
	X509PoPRootsFile string       // "" disables x509pop
	K8sPSAT          []K8sCluster // sorted by name; none disables k8s_psat
}

// K8sCluster is one cluster whose agents may attest by k8s_psat.
type K8sCluster struct {
	Name                   string
	Kubeconfig             string // "" means in-cluster
	AllowedServiceAccounts []string
	Audience               string
}

// Store is the chosen datastore.
type Store struct {
	Type string // "sqlite" | "postgres"
	Path string
	DSN  string
}

// KeyManager is the chosen key manager.
type KeyManager struct {
	Type string // "disk" | "pkcs11" | "memory"
	Dir  string
	URI  string
}

// Upstream is the chosen upstream.
type Upstream struct {
	Type       string // "self_signed" | "disk" | "step_ca"
	RootTTL    time.Duration
	CertPath   string // self_signed: where the root certificate is kept
	CertFile   string
	KeyFile    string
	BundleFile string

	// step_ca: exactly one of RootFingerprint (hex) and RootFile is set.
	URL, RootFingerprint, RootFile, Provisioner string
	PasswordFile, JWKKeyFile                    string
	X5CCertFile, X5CKeyFile                     string
}

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
	var c Config
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if f.TrustDomain == "" {
		bad("trust_domain", "required (e.g. example.org)")
	} else if err != nil {
		bad("trust_domain", "%v", err)
	}
	c.TrustDomain = td
	if f.DataDir == "" {
		bad("data_dir", "required")
	}
	c.DataDir = f.DataDir
	c.InstanceID = or(f.InstanceID, "primary")
	c.AdminSocket = or(f.AdminSocket, filepath.Join(f.DataDir, "admin.sock"))
	c.ServerAddress = f.ServerAddress
	c.HealthAddress = f.HealthAddress
	c.PProf = f.PProf
	if f.PProf && f.HealthAddress == "" {
		bad("pprof", "needs health_address")
	}
	c.ConsoleAddress = f.ConsoleAddress
	c.KeyType = keys.ECP256
	if f.KeyType != "" {
		if c.KeyType, err = keys.ParseType(f.KeyType); err != nil {
			bad("key_type", "%v", err)
		}
	}
	dur := func(field, s string, def time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			bad(field, "%q is not a positive duration (e.g. 1h, 30m)", s)
		}
		return d
	}
	c.CATTL = dur("ca_ttl", f.CATTL, 24*time.Hour)
	c.X509SVIDTTL = dur("x509_svid_ttl", f.X509SVIDTTL, time.Hour)
	c.JWTSVIDTTL = dur("jwt_svid_ttl", f.JWTSVIDTTL, 5*time.Minute)
	c.RefreshHint = dur("bundle_refresh_hint", f.RefreshHint, 5*time.Minute)
	c.JWTIssuer = f.JWTIssuer
	if o := f.OIDCDiscovery; o.Address != "" || o.CertFile != "" || o.KeyFile != "" {
		c.OIDC = OIDCDiscovery{Address: o.Address, CertFile: o.CertFile, KeyFile: o.KeyFile}
		if o.Address == "" {
			bad("oidc_discovery.address", "required when oidc_discovery is set")
		}
		if (o.CertFile == "") != (o.KeyFile == "") {
			bad("oidc_discovery", "set both cert_file and key_file (HTTPS) or neither (plain HTTP behind a proxy)")
		}
		// The discovery document's issuer and the JWT-SVIDs' iss claim are
		// one value, or OIDC clients refuse every token.
		if u, err := url.Parse(f.JWTIssuer); f.JWTIssuer == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") ||
			u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			bad("jwt_issuer", "%q: oidc_discovery needs jwt_issuer to be the issuer URL clients fetch discovery from (https://host[/path], no query)", f.JWTIssuer)
		} else if o.CertFile != "" && u.Scheme != "https" {
			bad("jwt_issuer", "%q: oidc_discovery serves HTTPS (cert_file set), so the issuer must be an https:// URL", f.JWTIssuer)
		}
	}
	if c.X509SVIDTTL >= c.CATTL {
		bad("x509_svid_ttl", "must be shorter than ca_ttl (%s)", c.CATTL)
	}
	if c.JWTSVIDTTL >= c.CATTL {
		bad("jwt_svid_ttl", "must be shorter than ca_ttl (%s)", c.CATTL)
	}
	c.NodeAttestation.AgentSVIDTTL = dur("node_attestation.agent_svid_ttl", f.NodeAttestation.AgentSVIDTTL, c.X509SVIDTTL)
	if c.NodeAttestation.AgentSVIDTTL >= c.CATTL {
		bad("node_attestation.agent_svid_ttl", "must be shorter than ca_ttl (%s)", c.CATTL)
	}
	c.NodeAttestation.X509PoPRootsFile = f.NodeAttestation.X509PoP.RootsFile
	c.NodeAttestation.K8sPSAT = k8sClusters(f.NodeAttestation.K8sPSAT, bad)

	if k := f.Kubernetes; k.Cluster != "" {
		if _, err := spiffeid.FromSegments(td, "sigil", "agent", "k8s_psat", k.Cluster); err != nil {
			bad("kubernetes.cluster", "%q: %v", k.Cluster, err)
		}
		c.Kubernetes = Kubernetes{
			Cluster: k.Cluster, Kubeconfig: k.Kubeconfig, DefaultIdentity: k.DefaultIdentity == nil || *k.DefaultIdentity,
			LeaseNamespace: or(k.LeaseNamespace, "sigil"), LeaseName: or(k.LeaseName, "sigil-ca-registrar"),
		}
	} else if k != (KubernetesFile{}) {
		bad("kubernetes.cluster", "required when kubernetes is set")
	}

	switch c.Store.Type = or(f.Store.Type, "sqlite"); c.Store.Type {
	case "sqlite":
		c.Store.Path = or(f.Store.Path, filepath.Join(f.DataDir, "sigil.db"))
		if f.Store.DSN != "" {
			bad("store.dsn", "only for type postgres")
		}
	case "postgres":
		if f.Store.DSN == "" {
			bad("store.dsn", "required for type postgres")
		}
		c.Store.DSN = f.Store.DSN
	default:
		bad("store.type", "%q: want sqlite or postgres", f.Store.Type)
	}

	switch c.KeyManager.Type = or(f.KeyManager.Type, "disk"); c.KeyManager.Type {
	case "disk":
		c.KeyManager.Dir = or(f.KeyManager.Dir, filepath.Join(f.DataDir, "keys"))
	case "pkcs11":
		if f.KeyManager.URI == "" {
			bad("key_manager.uri", "required for type pkcs11 (pkcs11:module-path=...;token=...?pin-value=...)")
		}
		c.KeyManager.URI = f.KeyManager.URI
	case "memory":
	default:
		bad("key_manager.type", "%q: want disk, pkcs11 or memory", f.KeyManager.Type)
	}

	switch c.Upstream.Type = or(f.Upstream.Type, "self_signed"); c.Upstream.Type {
	case "self_signed":
		c.Upstream.RootTTL = dur("upstream.root_ttl", f.Upstream.RootTTL, 8760*time.Hour)
		c.Upstream.CertPath = filepath.Join(f.DataDir, "root.crt")
		if c.Upstream.RootTTL <= c.CATTL {
			bad("upstream.root_ttl", "must be longer than ca_ttl (%s)", c.CATTL)
		}
	case "disk":
		if f.Upstream.CertFile == "" || f.Upstream.KeyFile == "" {
			bad("upstream", "type disk needs cert_file and key_file")
		}
		c.Upstream.CertFile, c.Upstream.KeyFile, c.Upstream.BundleFile = f.Upstream.CertFile, f.Upstream.KeyFile, f.Upstream.BundleFile
	case "step_ca":
		validateStepCA(f.Upstream, &c.Upstream, bad)
	default:
		bad("upstream.type", "%q: want self_signed, disk or step_ca", f.Upstream.Type)
	}
	if c.Upstream.Type != "step_ca" {
		for _, kv := range [][2]string{{"url", f.Upstream.URL}, {"root", f.Upstream.Root}, {"provisioner", f.Upstream.Provisioner},
			{"password_file", f.Upstream.PasswordFile}, {"jwk_key_file", f.Upstream.JWKKeyFile},
			{"x5c_cert_file", f.Upstream.X5CCertFile}, {"x5c_key_file", f.Upstream.X5CKeyFile}} {
			if kv[1] != "" {
				bad("upstream."+kv[0], "only for type step_ca")
			}
		}
	}
	fed := f.Federation
	c.Federation.BundleEndpoint = fed.BundleEndpoint
	if ep := &c.Federation.BundleEndpoint; ep.Address != "" {
		switch ep.Profile = or(ep.Profile, "https_spiffe"); ep.Profile {
		case "https_spiffe":
			if ep.CertFile != "" || ep.KeyFile != "" {
				bad("federation.bundle_endpoint", "cert_file and key_file are only for profile https_web")
			}
		case "https_web":
			if ep.CertFile == "" || ep.KeyFile == "" {
				bad("federation.bundle_endpoint", "profile https_web needs cert_file and key_file")
			}
		default:
			bad("federation.bundle_endpoint.profile", "%q: want https_spiffe or https_web", ep.Profile)
		}
	} else if ep.Profile != "" || ep.CertFile != "" || ep.KeyFile != "" {
		bad("federation.bundle_endpoint.address", "required when the bundle endpoint is configured")
	}
	c.Federation.MinRefresh = dur("federation.min_refresh", fed.MinRefresh, 30*time.Second)
	c.Federation.MaxRefresh = dur("federation.max_refresh", fed.MaxRefresh, time.Hour)
	if c.Federation.MaxRefresh < c.Federation.MinRefresh {
		bad("federation.max_refresh", "must not be below min_refresh (%s)", c.Federation.MinRefresh)
	}
	seen := map[string]bool{}
	for i, r := range fed.Relationships {
		field := fmt.Sprintf("federation.relationships[%d]", i)
		rtd, err := spiffeid.TrustDomainFromString(r.TrustDomain)
		switch {
		case err != nil:
			bad(field+".trust_domain", "%q: %v", r.TrustDomain, err)
		case rtd == c.TrustDomain:
			bad(field+".trust_domain", "%s is our own trust domain", rtd)
		case seen[rtd.Name()]:
			bad(field+".trust_domain", "%s appears twice", rtd)
		}
		seen[rtd.Name()] = true
		r.TrustDomain = rtd.Name()
		if !strings.HasPrefix(r.BundleEndpointURL, "https://") {
			bad(field+".bundle_endpoint_url", "%q: want https://...", r.BundleEndpointURL)
		}
		switch r.Profile {
		case "https_spiffe":
			id, err := spiffeid.FromString(r.EndpointSPIFFEID)
			if err != nil {
				bad(field+".endpoint_spiffe_id", "%q: %v", r.EndpointSPIFFEID, err)
			} else if id.TrustDomain() != rtd {
				bad(field+".endpoint_spiffe_id", "%s is not in trust domain %s", id, rtd)
			}
			if r.WebRootsFile != "" {
				bad(field+".web_roots_file", "only for profile https_web")
			}
		case "https_web":
			if r.EndpointSPIFFEID != "" {
				bad(field+".endpoint_spiffe_id", "only for profile https_spiffe")
			}
		default:
			bad(field+".profile", "%q: want https_spiffe or https_web", r.Profile)
		}
		c.Federation.Relationships = append(c.Federation.Relationships, r)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return c, nil
}

func k8sClusters(f K8sPSATFile, bad func(field, format string, args ...any)) []K8sCluster {
	names := make([]string, 0, len(f.Clusters))
	for name := range f.Clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []K8sCluster
	for _, name := range names {
		cf := f.Clusters[name]
		field := "node_attestation.k8s_psat.clusters." + name
		if err := nodeattest.CheckClusterName(name); err != nil {
			bad("node_attestation.k8s_psat.clusters", "cluster name %v", err)
			continue
		}
		switch {
		case cf.Kubeconfig == "" && !cf.InCluster:
			bad(field, "set kubeconfig, or in_cluster: true when the CA runs in this cluster")
		case cf.Kubeconfig != "" && cf.InCluster:
			bad(field, "kubeconfig and in_cluster are both set: choose one")
		}
		if len(cf.AllowedServiceAccounts) == 0 {
			bad(field+".allowed_service_accounts", "required: the agents' service accounts as namespace:name")
		}
		for _, sa := range cf.AllowedServiceAccounts {
			if err := nodeattest.CheckServiceAccount(sa); err != nil {
				bad(field+".allowed_service_accounts", "%v", err)
			}
		}
		out = append(out, K8sCluster{
			Name: name, Kubeconfig: cf.Kubeconfig,
			AllowedServiceAccounts: slices.Clone(cf.AllowedServiceAccounts),
			Audience:               or(cf.Audience, nodeattest.DefaultPSATAudience),
		})
	}
	return out
}

// validateStepCA checks a step_ca upstream: an https URL, a root given by
// fingerprint or file, a provisioner, and either JWK (password) or X5C
// (certificate and key) credentials.
func validateStepCA(f UpstreamFile, u *Upstream, bad func(field, format string, args ...any)) {
	if parsed, err := url.Parse(f.URL); f.URL == "" || err != nil || parsed.Scheme != "https" || parsed.Host == "" {
		bad("upstream.url", "%q: type step_ca needs step-ca's https://host:port", f.URL)
	}
	u.URL = f.URL
	switch fp := strings.ToLower(strings.ReplaceAll(f.Root, ":", "")); {
	case f.Root == "":
		bad("upstream.root", "type step_ca needs step-ca's root: its SHA-256 fingerprint (step certificate fingerprint root_ca.crt) or a PEM file")
	case len(fp) == 64 && isHex(fp):
		u.RootFingerprint = fp
	default:
		u.RootFile = f.Root
	}
	if f.Provisioner == "" {
		bad("upstream.provisioner", "type step_ca needs the provisioner's name")
	}
	u.Provisioner = f.Provisioner
	u.PasswordFile, u.JWKKeyFile = f.PasswordFile, f.JWKKeyFile
	u.X5CCertFile, u.X5CKeyFile = f.X5CCertFile, f.X5CKeyFile
	x5c := f.X5CCertFile != "" || f.X5CKeyFile != ""
	switch {
	case x5c && (f.X5CCertFile == "" || f.X5CKeyFile == ""):
		bad("upstream", "an X5C provisioner needs x5c_cert_file and x5c_key_file")
	case x5c && (f.PasswordFile != "" || f.JWKKeyFile != ""):
		bad("upstream", "set either x5c_cert_file/x5c_key_file (X5C) or password_file (JWK), not both")
	case !x5c && f.PasswordFile == "":
		bad("upstream.password_file", "a JWK provisioner needs the password file that decrypts its key")
	}
}

func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
