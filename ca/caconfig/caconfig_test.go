package caconfig

import (
	"strings"
	"testing"
	"time"
)

const psat = "trust_domain: example.org\ndata_dir: /d\nnode_attestation:\n  k8s_psat:\n    clusters:\n"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "minimal", in: "trust_domain: example.org\ndata_dir: /d\n", check: func(t *testing.T, c Config) {
			if c.Store.Type != "sqlite" || c.Store.Path != "/d/sigil.db" || c.KeyManager.Dir != "/d/keys" || c.Upstream.Type != "self_signed" {
				t.Fatalf("defaults: %+v", c)
			}
			if c.CATTL != 24*time.Hour || c.X509SVIDTTL != time.Hour || c.JWTSVIDTTL != 5*time.Minute || c.AdminSocket != "/d/admin.sock" {
				t.Fatalf("defaults: %+v", c)
			}
		}},
		{name: "postgres and pkcs11", in: "trust_domain: example.org\ndata_dir: /d\nstore: {type: postgres, dsn: 'postgres://x'}\nkey_manager: {type: pkcs11, uri: 'pkcs11:token=t'}\n", check: func(t *testing.T, c Config) {
			if c.Store.DSN != "postgres://x" || c.KeyManager.URI != "pkcs11:token=t" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "unknown key", in: "trust_domain: example.org\ndata_dir: /d\nca_tll: 1h\n", wantErr: `line 3: unknown key "ca_tll"`},
		{name: "unknown nested key", in: "trust_domain: example.org\ndata_dir: /d\nstore:\n  tpye: sqlite\n", wantErr: `line 4: unknown key "tpye"`},
		{name: "bad trust domain", in: "trust_domain: Example.ORG\ndata_dir: /d\n", wantErr: "trust_domain"},
		{name: "missing trust domain", in: "data_dir: /d\n", wantErr: "trust_domain: required"},
		{name: "bad duration", in: "trust_domain: example.org\ndata_dir: /d\nca_ttl: forever\n", wantErr: `ca_ttl: "forever"`},
		{name: "svid ttl too long", in: "trust_domain: example.org\ndata_dir: /d\nx509_svid_ttl: 48h\n", wantErr: "x509_svid_ttl: must be shorter"},
		{name: "bad key type", in: "trust_domain: example.org\ndata_dir: /d\nkey_type: rsa-1024\n", wantErr: "key_type"},
		{name: "pprof without health address", in: "trust_domain: example.org\ndata_dir: /d\npprof: true\n", wantErr: "pprof: needs health_address"},
		{name: "postgres without dsn", in: "trust_domain: example.org\ndata_dir: /d\nstore: {type: postgres}\n", wantErr: "store.dsn: required"},
		{name: "unknown store", in: "trust_domain: example.org\ndata_dir: /d\nstore: {type: mysql}\n", wantErr: "store.type"},
		{name: "disk upstream without files", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: disk}\n", wantErr: "cert_file and key_file"},
		{name: "step_ca by fingerprint", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: step_ca, url: 'https://ca:9000', root: 'AB:" + strings.Repeat("cd", 31) + "', provisioner: sigil, password_file: /p}\n", check: func(t *testing.T, c Config) {
			u := c.Upstream
			if u.Type != "step_ca" || u.RootFingerprint != "ab"+strings.Repeat("cd", 31) || u.RootFile != "" || u.Provisioner != "sigil" || u.PasswordFile != "/p" {
				t.Fatalf("%+v", u)
			}
		}},
		{name: "step_ca x5c with root file", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: step_ca, url: 'https://ca:9000', root: /r.pem, provisioner: x, x5c_cert_file: /c, x5c_key_file: /k}\n", check: func(t *testing.T, c Config) {
			if u := c.Upstream; u.RootFile != "/r.pem" || u.RootFingerprint != "" || u.X5CCertFile != "/c" || u.X5CKeyFile != "/k" {
				t.Fatalf("%+v", u)
			}
		}},
		{name: "step_ca http url", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: step_ca, url: 'http://ca:9000', root: /r, provisioner: p, password_file: /p}\n", wantErr: "upstream.url"},
		{name: "step_ca without root", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: step_ca, url: 'https://ca', provisioner: p, password_file: /p}\n", wantErr: "upstream.root"},
		{name: "step_ca without credentials", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: step_ca, url: 'https://ca', root: /r, provisioner: p}\n", wantErr: "upstream.password_file"},
		{name: "step_ca half x5c", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: step_ca, url: 'https://ca', root: /r, provisioner: p, x5c_cert_file: /c}\n", wantErr: "x5c_key_file"},
		{name: "step_ca fields on disk", in: "trust_domain: example.org\ndata_dir: /d\nupstream: {type: disk, cert_file: a, key_file: b, url: 'https://ca'}\n", wantErr: "upstream.url: only for type step_ca"},
		{name: "oidc discovery", in: "trust_domain: example.org\ndata_dir: /d\njwt_issuer: 'https://oidc.example.org'\noidc_discovery: {address: '127.0.0.1:8445', cert_file: /c, key_file: /k}\n", check: func(t *testing.T, c Config) {
			if c.OIDC.Address != "127.0.0.1:8445" || c.OIDC.CertFile != "/c" || c.JWTIssuer != "https://oidc.example.org" {
				t.Fatalf("%+v", c.OIDC)
			}
		}},
		{name: "oidc discovery without issuer", in: "trust_domain: example.org\ndata_dir: /d\noidc_discovery: {address: ':8445'}\n", wantErr: "jwt_issuer"},
		{name: "oidc discovery issuer not a url", in: "trust_domain: example.org\ndata_dir: /d\njwt_issuer: sigil\noidc_discovery: {address: ':8445'}\n", wantErr: "jwt_issuer"},
		{name: "oidc https with http issuer", in: "trust_domain: example.org\ndata_dir: /d\njwt_issuer: 'http://x'\noidc_discovery: {address: ':8445', cert_file: /c, key_file: /k}\n", wantErr: "must be an https"},
		{name: "oidc half tls", in: "trust_domain: example.org\ndata_dir: /d\njwt_issuer: 'https://x'\noidc_discovery: {address: ':8445', cert_file: /c}\n", wantErr: "both cert_file and key_file"},
		{name: "node attestation", in: "trust_domain: example.org\ndata_dir: /d\nnode_attestation: {agent_svid_ttl: 2h, x509pop: {roots_file: /etc/pki/nodes.pem}}\n", check: func(t *testing.T, c Config) {
			if c.NodeAttestation.AgentSVIDTTL != 2*time.Hour || c.NodeAttestation.X509PoPRootsFile != "/etc/pki/nodes.pem" {
				t.Fatalf("%+v", c.NodeAttestation)
			}
		}},
		{name: "node attestation defaults", in: "trust_domain: example.org\ndata_dir: /d\nx509_svid_ttl: 30m\n", check: func(t *testing.T, c Config) {
			if c.NodeAttestation.AgentSVIDTTL != 30*time.Minute || c.NodeAttestation.X509PoPRootsFile != "" {
				t.Fatalf("%+v", c.NodeAttestation)
			}
		}},
		{name: "agent svid ttl too long", in: "trust_domain: example.org\ndata_dir: /d\nnode_attestation: {agent_svid_ttl: 48h}\n", wantErr: "node_attestation.agent_svid_ttl: must be shorter"},
		{name: "unknown x509pop key", in: "trust_domain: example.org\ndata_dir: /d\nnode_attestation:\n  x509pop:\n    roots: a.pem\n", wantErr: `line 5: unknown key "roots"`},
		{name: "k8s_psat", in: psat + "      prod:\n        kubeconfig: /etc/sigil/prod.kubeconfig\n        allowed_service_accounts: [sigil:agent, sigil:agent-canary]\n      dev:\n        in_cluster: true\n        allowed_service_accounts: [kube-system:sigil]\n        audience: sigil-dev\n", check: func(t *testing.T, c Config) {
			got := c.NodeAttestation.K8sPSAT
			if len(got) != 2 || got[0].Name != "dev" || got[1].Name != "prod" {
				t.Fatalf("clusters %+v, want dev then prod", got)
			}
			if got[0].Kubeconfig != "" || got[0].Audience != "sigil-dev" || len(got[0].AllowedServiceAccounts) != 1 {
				t.Errorf("dev %+v", got[0])
			}
			if got[1].Kubeconfig != "/etc/sigil/prod.kubeconfig" || got[1].Audience != "sigil" || got[1].AllowedServiceAccounts[1] != "sigil:agent-canary" {
				t.Errorf("prod %+v", got[1])
			}
		}},
		{name: "k8s_psat neither kubeconfig nor in_cluster", in: psat + "      prod:\n        allowed_service_accounts: [a:b]\n", wantErr: "clusters.prod: set kubeconfig, or in_cluster"},
		{name: "k8s_psat both kubeconfig and in_cluster", in: psat + "      prod:\n        kubeconfig: /k\n        in_cluster: true\n        allowed_service_accounts: [a:b]\n", wantErr: "both set"},
		{name: "k8s_psat no service accounts", in: psat + "      prod:\n        kubeconfig: /k\n", wantErr: "clusters.prod.allowed_service_accounts: required"},
		{name: "k8s_psat bad service account", in: psat + "      prod:\n        kubeconfig: /k\n        allowed_service_accounts: [agent]\n", wantErr: `service account "agent": want namespace:name`},
		{name: "k8s_psat service account empty namespace", in: psat + "      prod:\n        kubeconfig: /k\n        allowed_service_accounts: [':agent']\n", wantErr: "want namespace:name"},
		{name: "k8s_psat bad cluster name", in: psat + "      a/b:\n        kubeconfig: /k\n        allowed_service_accounts: [a:b]\n", wantErr: `cluster name "a/b"`},
		{name: "k8s_psat unknown key", in: psat + "      prod:\n        kube_config: /k\n", wantErr: `line 7: unknown key "kube_config"`},
		{name: "kubernetes", in: "trust_domain: example.org\ndata_dir: /d\nkubernetes: {cluster: prod, default_identity: false}\n", check: func(t *testing.T, c Config) {
			k := c.Kubernetes
			if k.Cluster != "prod" || k.DefaultIdentity || k.LeaseNamespace != "sigil" || k.LeaseName != "sigil-ca-registrar" || k.Kubeconfig != "" {
				t.Fatalf("%+v", k)
			}
		}},
		{name: "kubernetes default identity on", in: "trust_domain: example.org\ndata_dir: /d\nkubernetes: {cluster: prod}\n", check: func(t *testing.T, c Config) {
			if !c.Kubernetes.DefaultIdentity {
				t.Fatalf("%+v", c.Kubernetes)
			}
		}},
		{name: "kubernetes without cluster", in: "trust_domain: example.org\ndata_dir: /d\nkubernetes: {kubeconfig: /k}\n", wantErr: "kubernetes.cluster: required"},
		{name: "kubernetes bad cluster", in: "trust_domain: example.org\ndata_dir: /d\nkubernetes: {cluster: 'a/b'}\n", wantErr: "kubernetes.cluster"},
		{name: "federation", in: "trust_domain: example.org\ndata_dir: /d\nfederation:\n  bundle_endpoint: {address: 127.0.0.1:8441}\n  min_refresh: 10s\n  relationships:\n  - {trust_domain: spire.test, bundle_endpoint_url: 'https://h:1', profile: https_spiffe, endpoint_spiffe_id: 'spiffe://spire.test/spire/server', bundle_file: /b.json}\n  - {trust_domain: web.test, bundle_endpoint_url: 'https://w/b', profile: https_web, web_roots_file: /r.pem}\n", check: func(t *testing.T, c Config) {
			f := c.Federation
			if f.BundleEndpoint.Profile != "https_spiffe" || f.MinRefresh != 10*time.Second || f.MaxRefresh != time.Hour || len(f.Relationships) != 2 || f.Relationships[0].BundleFile != "/b.json" {
				t.Fatalf("%+v", f)
			}
		}},
		{name: "web endpoint without cert", in: "trust_domain: example.org\ndata_dir: /d\nfederation: {bundle_endpoint: {address: ':1', profile: https_web}}\n", wantErr: "needs cert_file and key_file"},
		{name: "endpoint cert without address", in: "trust_domain: example.org\ndata_dir: /d\nfederation: {bundle_endpoint: {cert_file: c.pem}}\n", wantErr: "bundle_endpoint.address: required"},
		{name: "federate with ourselves", in: "trust_domain: example.org\ndata_dir: /d\nfederation: {relationships: [{trust_domain: example.org, bundle_endpoint_url: 'https://h', profile: https_web}]}\n", wantErr: "our own trust domain"},
		{name: "endpoint id elsewhere", in: "trust_domain: example.org\ndata_dir: /d\nfederation: {relationships: [{trust_domain: a.test, bundle_endpoint_url: 'https://h', profile: https_spiffe, endpoint_spiffe_id: 'spiffe://b.test/x'}]}\n", wantErr: "not in trust domain a.test"},
		{name: "http bundle url", in: "trust_domain: example.org\ndata_dir: /d\nfederation: {relationships: [{trust_domain: a.test, bundle_endpoint_url: 'http://h', profile: https_web}]}\n", wantErr: "want https://"},
		{name: "not yaml", in: "{{{", wantErr: "config:"},
		{name: "empty", in: "", wantErr: "config is empty"},
		{name: "only comments", in: "# trust_domain: example.org\n", wantErr: "config is empty"},
		{name: "two documents", in: "trust_domain: example.org\ndata_dir: /d\n---\ndata_dir: /e\n", wantErr: "config holds 2 YAML documents"},
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

func FuzzParse(f *testing.F) {
	f.Add("trust_domain: example.org\ndata_dir: /d\n")
	f.Add("trust_domain: example.org\ndata_dir: /d\nstore: {type: postgres, dsn: x}\nupstream: {type: disk, cert_file: a, key_file: b}\n")
	f.Add("a: [1, {b: c}]")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse([]byte(s))
		if err != nil {
			return
		}
		if c.TrustDomain.IsZero() || c.DataDir == "" || c.CATTL <= c.X509SVIDTTL {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
	})
}
