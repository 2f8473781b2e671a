package systemd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/agentconfig"
	"github.com/sigilhq/sigil/authz/authzconfig"
	"github.com/sigilhq/sigil/ca/caconfig"
)

var units = []string{"sigil-ca.service", "sigil-agent.service", "sigil-authz.service"}

// installedSigil is where the units expect the binary.
const installedSigil = "/usr/local/bin/sigil"

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install systemd (Debian: apt-get install systemd, or bash hack/setup/51-systemd.sh)", name)
	}
	return p
}

// TestUnitsVerify runs `systemd-analyze verify` on every unit. It needs no
// running systemd. verify only warns (exit 0) about unknown keys and bad
// values, so any output at all fails the test. ExecStart must name an
// executable that exists: the copies point at this test binary instead of
// /usr/local/bin/sigil.
func TestUnitsVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		raw, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(raw, []byte("ExecStart="+installedSigil+" ")) {
			t.Fatalf("%s: ExecStart does not run %s", u, installedSigil)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, bytes.ReplaceAll(raw, []byte(installedSigil), []byte(self)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check can fail: a misspelt key is reported.
	bad := filepath.Join(dir, "bad.service")
	if err := os.WriteFile(bad, []byte("[Service]\nExecStart="+self+"\nProtectSystm=strict\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command(analyze, "verify", "--man=no", bad).CombinedOutput()
	if !strings.Contains(string(out), "ProtectSystm") {
		t.Fatalf("systemd-analyze verify did not report an unknown key: %q", out)
	}
}

// TestUnitsHardening checks the settings the README promises, so that an
// edit that drops one is caught; the agent's exceptions are deliberate.
func TestUnitsHardening(t *testing.T) {
	common := []string{
		"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "PrivateDevices=yes",
		"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
		"RestrictNamespaces=yes", "RestrictSUIDSGID=yes", "SystemCallArchitectures=native",
		"StateDirectory=", "UMask=0077",
	}
	for _, u := range units {
		raw, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(raw), "\n")
		has := func(prefix string) bool {
			for _, l := range lines {
				if strings.HasPrefix(l, prefix) {
					return true
				}
			}
			return false
		}
		want := append([]string{}, common...)
		switch u {
		case "sigil-agent.service":
			want = append(want, "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH\n", "RuntimeDirectory=sigil\n", "RuntimeDirectoryMode=0755\n")
			for _, no := range []string{"ProtectProc=invisible", "PrivateUsers=yes", "ProtectHome=yes", "PrivatePIDs=yes"} {
				if has(no) {
					t.Errorf("%s: %s hides other users' processes from workload attestation", u, no)
				}
			}
		default:
			want = append(want, "CapabilityBoundingSet=\n", "ProtectProc=invisible", "ProtectHome=yes")
		}
		for _, w := range want {
			if strings.HasSuffix(w, "\n") {
				if !strings.Contains(string(raw), "\n"+w) {
					t.Errorf("%s: want the line %q", u, strings.TrimSuffix(w, "\n"))
				}
			} else if !has(w) {
				t.Errorf("%s: want a line starting %q", u, w)
			}
		}
	}
}

// TestSysusers creates the units' users in an empty root with
// systemd-sysusers.
func TestSysusers(t *testing.T) {
	sysusers := tool(t, "systemd-sysusers")
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := filepath.Abs("sigil-sysusers.conf")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusers, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"sigil-ca", "sigil-agent", "sigil-authz"} {
		if !strings.Contains(string(passwd), "\n"+u+":") && !strings.HasPrefix(string(passwd), u+":") {
			t.Errorf("user %s not created:\n%s", u, passwd)
		}
		unit, err := os.ReadFile(u + ".service")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(unit, []byte("\nUser="+u+"\n")) {
			t.Errorf("%s.service does not run as %s", u, u)
		}
	}
}

// TestSampleConfigs loads the sample configurations the units start with,
// through the loaders `sigil ca|agent|authz run` use, and checks that they
// agree with the units' directories.
func TestSampleConfigs(t *testing.T) {
	ca, err := caconfig.Load("../ca.yaml")
	if err != nil {
		t.Fatalf("deploy/ca.yaml: %v", err)
	}
	if ca.DataDir != "/var/lib/sigil-ca" || !strings.HasPrefix(ca.AdminSocket, "/run/sigil-ca/") {
		t.Errorf("deploy/ca.yaml: data_dir %q, admin_socket %q: want them under the unit's StateDirectory and RuntimeDirectory", ca.DataDir, ca.AdminSocket)
	}
	ag, err := agentconfig.Load("../agent.yaml")
	if err != nil {
		t.Fatalf("deploy/agent.yaml: %v", err)
	}
	if ag.DataDir != "/var/lib/sigil-agent" || ag.SocketPath != "/run/sigil/agent.sock" || ag.TrustBundleFile != "/etc/sigil/bundle.pem" {
		t.Errorf("deploy/agent.yaml: data_dir %q, socket_path %q, trust_bundle_file %q", ag.DataDir, ag.SocketPath, ag.TrustBundleFile)
	}
	az, err := authzconfig.Load("../authz.yaml")
	if err != nil {
		t.Fatalf("deploy/authz.yaml: %v", err)
	}
	if !strings.HasPrefix(az.DecisionLog.File, "/var/lib/sigil-authz/") {
		t.Errorf("deploy/authz.yaml: decision log %q is outside the unit's StateDirectory", az.DecisionLog.File)
	}
}
