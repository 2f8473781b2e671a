package caconfig

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/keys"
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
	ConsoleAddress string `yaml:"console_address"`

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

// NodeAttestationFile configures how agents prove their nodes. Join tokens
// are always accepted; x509pop is enabled by naming its roots.
type NodeAttestationFile struct {
	AgentSVIDTTL string      `yaml:"agent_svid_ttl"` // default: x509_svid_ttl
	X509PoP      X509PoPFile `yaml:"x509pop"`
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
	Type       string `yaml:"type"`        // self_signed (default) | disk
	RootTTL    string `yaml:"root_ttl"`    // self_signed: default 8760h
	CertFile   string `yaml:"cert_file"`   // disk
	KeyFile    string `yaml:"key_file"`    // disk
	BundleFile string `yaml:"bundle_file"` // disk
}

// Config is the validated configuration.
type Config struct {
	TrustDomain   spiffeid.TrustDomain
	DataDir       string
	InstanceID    string
	AdminSocket   string
	ServerAddress string // admin mTLS (and, later, node API); "" disables
	HealthAddress string // /live, /ready, /metrics; "" disables
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

	Federation Federation
}

// Federation is the validated federation config.
type Federation struct {
	BundleEndpoint         BundleEndpointFile // Address "" disables
	MinRefresh, MaxRefresh time.Duration
	Relationships          []RelationshipFile
}

// NodeAttestation is the validated node attestation config.
type NodeAttestation struct {
	AgentSVIDTTL     time.Duration
	X509PoPRootsFile string // "" disables x509pop
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
	Type       string // "self_signed" | "disk"
	RootTTL    time.Duration
	CertPath   string // self_signed: where the root certificate is kept
	CertFile   string
	KeyFile    string
	BundleFile string
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
	default:
		bad("upstream.type", "%q: want self_signed or disk", f.Upstream.Type)
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

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
