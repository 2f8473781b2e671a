package agentconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const base = "trust_domain: example.org\nserver_address: 127.0.0.1:8081\ndata_dir: /var/lib/sigil/agent\n"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults", in: base + "join_token: abc\n", check: func(t *testing.T, c Config) {
			if c.TrustDomain.Name() != "example.org" || c.JoinToken != "abc" {
				t.Errorf("got %+v", c)
			}
			if c.SocketPath != "/var/lib/sigil/agent/agent.sock" {
				t.Errorf("socket = %q", c.SocketPath)
			}
			if c.WorkloadKeyType != KeyECP256 {
				t.Errorf("key type = %q", c.WorkloadKeyType)
			}
			want := Limits{MaxStreamsPerUID: 1024, MaxStreams: 4096, MaxConnectionsPerUID: 256, MaxConnections: 1024,
				JWTSVIDsPerSecond: 20, JWTSVIDBurst: 50, SDSPendingTimeout: 5 * time.Minute}
			if c.Limits != want {
				t.Errorf("limits = %+v, want %+v", c.Limits, want)
			}
		}},
		{name: "limits", in: base + "limits:\n  max_streams_per_uid: 8\n  max_streams: 9\n  max_connections_per_uid: 2\n  max_connections: 3\n  jwt_svids_per_second_per_uid: 4\n  jwt_svid_burst_per_uid: 5\n  sds_pending_timeout: 90s\n", check: func(t *testing.T, c Config) {
			want := Limits{MaxStreamsPerUID: 8, MaxStreams: 9, MaxConnectionsPerUID: 2, MaxConnections: 3,
				JWTSVIDsPerSecond: 4, JWTSVIDBurst: 5, SDSPendingTimeout: 90 * time.Second}
			if c.Limits != want {
				t.Errorf("limits = %+v, want %+v", c.Limits, want)
			}
		}},
		{name: "zero limit", in: base + "limits:\n  max_streams: 0\n", wantErr: "limits.max_streams is 0: want at least 1"},
		{name: "negative limit", in: base + "limits:\n  max_connections_per_uid: -3\n", wantErr: "limits.max_connections_per_uid is -3"},
		{name: "unknown limit", in: base + "limits:\n  max_stream: 3\n", wantErr: `line 5: unknown key "max_stream"`},
		{name: "bad pending timeout", in: base + "limits:\n  sds_pending_timeout: soon\n", wantErr: "limits.sds_pending_timeout \"soon\""},
		{name: "short pending timeout", in: base + "limits:\n  sds_pending_timeout: 10ms\n", wantErr: "want at least 1s"},
		{name: "x509pop", in: base + "x509pop:\n  cert_file: /n.crt\n  key_file: /n.key\nworkload_key_type: rsa-2048\nhealth_address: 127.0.0.1:8090\nsocket_path: /run/a.sock\n", check: func(t *testing.T, c Config) {
			if c.X509PoP == nil || c.X509PoP.CertFile != "/n.crt" || c.X509PoP.KeyFile != "/n.key" {
				t.Errorf("x509pop = %+v", c.X509PoP)
			}
			if c.WorkloadKeyType != KeyRSA2048 || c.SocketPath != "/run/a.sock" || c.HealthAddress != "127.0.0.1:8090" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "no attestor", in: base},
		{name: "k8s_psat default token path", in: base + "k8s_psat:\n  cluster: prod-1\n", check: func(t *testing.T, c Config) {
			if c.K8sPSAT == nil || c.K8sPSAT.Cluster != "prod-1" || c.K8sPSAT.TokenPath != "/var/run/secrets/tokens/sigil-agent" {
				t.Errorf("k8s_psat = %+v", c.K8sPSAT)
			}
		}},
		{name: "k8s_psat token path", in: base + "k8s_psat:\n  cluster: c\n  token_path: /t/agent\n", check: func(t *testing.T, c Config) {
			if c.K8sPSAT == nil || c.K8sPSAT.TokenPath != "/t/agent" {
				t.Errorf("k8s_psat = %+v", c.K8sPSAT)
			}
		}},
		{name: "k8s_psat no cluster", in: base + "k8s_psat:\n  token_path: /t\n", wantErr: "k8s_psat.cluster: required"},
		{name: "k8s_psat cluster with slash", in: base + "k8s_psat:\n  cluster: a/b\n", wantErr: `k8s_psat.cluster: "a/b"`},
		{name: "k8s_psat cluster dotdot", in: base + "k8s_psat:\n  cluster: ..\n", wantErr: "not a valid name"},
		{name: "k8s_psat and join token", in: base + "join_token: a\nk8s_psat:\n  cluster: c\n", wantErr: "choose one"},
		{name: "k8s_psat unknown key", in: base + "k8s_psat:\n  cluster: c\n  audience: sigil\n", wantErr: `unknown key "audience"`},
		{name: "unknown key", in: base + "join_tokne: abc\n", wantErr: `line 4: unknown key "join_tokne"`},
		{name: "unknown nested key", in: base + "x509pop:\n  cert: /a\n", wantErr: `line 5: unknown key "cert"`},
		{name: "no trust domain", in: "server_address: a:1\ndata_dir: /x\n", wantErr: "trust_domain is required"},
		{name: "bad trust domain", in: "trust_domain: Ex ample\nserver_address: a:1\ndata_dir: /x\n", wantErr: "trust_domain"},
		{name: "no server", in: "trust_domain: example.org\ndata_dir: /x\n", wantErr: "server_address is required"},
		{name: "bad server", in: "trust_domain: example.org\nserver_address: nope\ndata_dir: /x\n", wantErr: "server_address \"nope\""},
		{name: "one server", in: base, check: func(t *testing.T, c Config) {
			if c.ServerAddress != "127.0.0.1:8081" || len(c.ServerAddresses) != 1 || c.ServerAddresses[0] != "127.0.0.1:8081" {
				t.Errorf("servers = %q %q", c.ServerAddress, c.ServerAddresses)
			}
		}},
		{name: "server list", in: "trust_domain: example.org\nserver_address: [ca-a.example.org:8443, '10.0.0.2:8443', '[::1]:8443']\ndata_dir: /x\n", check: func(t *testing.T, c Config) {
			want := []string{"ca-a.example.org:8443", "10.0.0.2:8443", "[::1]:8443"}
			if c.ServerAddress != want[0] || strings.Join(c.ServerAddresses, " ") != strings.Join(want, " ") {
				t.Errorf("servers = %q %q, want %q", c.ServerAddress, c.ServerAddresses, want)
			}
		}},
		{name: "server block list", in: "trust_domain: example.org\nserver_address:\n  - a:1\n  - b:2\ndata_dir: /x\n", check: func(t *testing.T, c Config) {
			if strings.Join(c.ServerAddresses, " ") != "a:1 b:2" {
				t.Errorf("servers = %q", c.ServerAddresses)
			}
		}},
		{name: "empty server list", in: "trust_domain: example.org\nserver_address: []\ndata_dir: /x\n", wantErr: "server_address is required"},
		{name: "bad server in list", in: "trust_domain: example.org\nserver_address: [a:1, b]\ndata_dir: /x\n", wantErr: `server_address[1] "b": want host:port`},
		{name: "bad port", in: "trust_domain: example.org\nserver_address: a:http\ndata_dir: /x\n", wantErr: `port "http" is not a number`},
		{name: "port zero", in: "trust_domain: example.org\nserver_address: [a:1, a:0]\ndata_dir: /x\n", wantErr: `server_address[1] "a:0": port "0"`},
		{name: "no host", in: "trust_domain: example.org\nserver_address: ':8443'\ndata_dir: /x\n", wantErr: `want host:port`},
		{name: "duplicate server", in: "trust_domain: example.org\nserver_address: [a:1, a:1]\ndata_dir: /x\n", wantErr: "listed twice"},
		{name: "server map", in: "trust_domain: example.org\nserver_address: {a: 1}\ndata_dir: /x\n", wantErr: "server_address: want host:port or a list"},
		{name: "server nested list", in: "trust_domain: example.org\nserver_address: [[a:1]]\ndata_dir: /x\n", wantErr: "server_address"},
		{name: "no data dir", in: "trust_domain: example.org\nserver_address: a:1\n", wantErr: "data_dir is required"},
		{name: "two attestors", in: base + "join_token: a\nx509pop:\n  cert_file: /a\n  key_file: /b\n", wantErr: "choose one"},
		{name: "x509pop no key", in: base + "x509pop:\n  cert_file: /a\n", wantErr: "x509pop.key_file is required"},
		{name: "x509pop no cert", in: base + "x509pop:\n  key_file: /a\n", wantErr: "x509pop.cert_file is required"},
		{name: "bad key type", in: base + "workload_key_type: dsa\n", wantErr: `workload_key_type "dsa"`},
		{name: "bad health", in: base + "health_address: x\n", wantErr: "health_address"},
		{name: "gc percent default", in: base, check: func(t *testing.T, c Config) {
			if c.GCPercent != DefaultGCPercent {
				t.Errorf("gc percent = %d, want %d", c.GCPercent, DefaultGCPercent)
			}
		}},
		{name: "gc percent", in: base + "gc_percent: 100\n", check: func(t *testing.T, c Config) {
			if c.GCPercent != 100 {
				t.Errorf("gc percent = %d, want 100", c.GCPercent)
			}
		}},
		{name: "gc percent too low", in: base + "gc_percent: 0\n", wantErr: "gc_percent is 0: want 10 to 1000"},
		{name: "gc percent not a number", in: base + "gc_percent: lots\n", wantErr: "`lots` into int"},
		{name: "pprof without health address", in: base + "pprof: true\n", wantErr: "pprof: needs health_address"},
		{name: "pprof", in: base + "health_address: 127.0.0.1:8090\npprof: true\n", check: func(t *testing.T, c Config) {
			if !c.PProf {
				t.Errorf("pprof = false, want true")
			}
		}},
		{name: "k8s defaults", in: base + "workload_attestors:\n  k8s: {}\n", check: func(t *testing.T, c Config) {
			if c.K8s == nil || *c.K8s != (K8s{Wait: DefaultK8sWait}) {
				t.Errorf("k8s = %+v", c.K8s)
			}
		}},
		{name: "k8s set", in: base + "workload_attestors:\n  k8s:\n    kubeconfig: /etc/kube.conf\n    node_name: node-a.example\n    wait: 2s\n    proc_dir: /host/proc\n", check: func(t *testing.T, c Config) {
			want := K8s{Kubeconfig: "/etc/kube.conf", NodeName: "node-a.example", Wait: 2 * time.Second, ProcDir: "/host/proc"}
			if c.K8s == nil || *c.K8s != want {
				t.Errorf("k8s = %+v, want %+v", c.K8s, want)
			}
		}},
		{name: "no k8s", in: base, check: func(t *testing.T, c Config) {
			if c.K8s != nil {
				t.Errorf("k8s = %+v without workload_attestors", c.K8s)
			}
		}},
		{name: "k8s bad wait", in: base + "workload_attestors:\n  k8s:\n    wait: soon\n", wantErr: `workload_attestors.k8s.wait "soon"`},
		{name: "k8s long wait", in: base + "workload_attestors:\n  k8s:\n    wait: 10m\n", wantErr: "want between 100ms and 1m"},
		{name: "k8s bad node", in: base + "workload_attestors:\n  k8s:\n    node_name: Node_A\n", wantErr: `workload_attestors.k8s.node_name "Node_A"`},
		{name: "k8s relative proc", in: base + "workload_attestors:\n  k8s:\n    proc_dir: proc\n", wantErr: "proc_dir \"proc\": want an absolute path"},
		{name: "k8s unknown key", in: base + "workload_attestors:\n  k8s:\n    nodename: a\n", wantErr: `line 6: unknown key "nodename"`},
		{name: "unknown attestor", in: base + "workload_attestors:\n  docker: {}\n", wantErr: `line 5: unknown key "docker"`},
		{name: "empty", in: "", wantErr: "config is empty"},
		{name: "only comments", in: "# trust_domain: example.org\n", wantErr: "config is empty"},
		{name: "two documents", in: base + "---\n" + base, wantErr: "config holds 2 YAML documents"},
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
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestLoadRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	in := "trust_domain: example.org\nserver_address: 127.0.0.1:1\ndata_dir: data\ntrust_bundle_file: bundle.pem\nx509pop:\n  cert_file: n.crt\n  key_file: /abs/n.key\n" +
		"workload_attestors:\n  k8s:\n    kubeconfig: kube/config\n"
	psat := "trust_domain: example.org\nserver_address: 127.0.0.1:1\ndata_dir: data\nk8s_psat:\n  cluster: c\n  token_path: tok\n"
	if err := os.WriteFile(filepath.Join(dir, "psat.yaml"), []byte(psat), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(filepath.Join(dir, "psat.yaml")); err != nil || c.K8sPSAT.TokenPath != filepath.Join(dir, "tok") {
		t.Errorf("k8s_psat relative token path: %+v, %v", c.K8sPSAT, err)
	}
	if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(dir, "data") || c.SocketPath != filepath.Join(dir, "data", "agent.sock") ||
		c.TrustBundleFile != filepath.Join(dir, "bundle.pem") || c.X509PoP.CertFile != filepath.Join(dir, "n.crt") || c.X509PoP.KeyFile != "/abs/n.key" {
		t.Errorf("got %+v %+v", c, c.X509PoP)
	}
	if c.K8s == nil || c.K8s.Kubeconfig != filepath.Join(dir, "kube", "config") {
		t.Errorf("k8s = %+v", c.K8s)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Errorf("missing file: err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(base + "join_token: abc\n"))
	f.Add([]byte(base + "x509pop:\n  cert_file: /a\n  key_file: /b\n"))
	f.Add([]byte("trust_domain: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if c.TrustDomain.IsZero() || c.ServerAddress == "" || len(c.ServerAddresses) == 0 || len(c.ServerAddresses) > MaxServerAddresses || c.DataDir == "" || c.SocketPath == "" || c.WorkloadKeyType == "" {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
		if c.JoinToken != "" && c.X509PoP != nil {
			t.Fatal("accepted two attestors")
		}
	})
}
