// Package spire measures SPIRE v1.14.5 beside Sigil on the same box: one
// batch of registration entries created through each one's CLI, and the
// SPIRE agent's memory per cached SVID. Run:
//
//	go test -run XXX -bench . -benchtime 1x ./hack/bench/spire
//
// Figures go to hack/bench/README.md; nothing here asserts a timing.
package spire

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var entries = flag.Int("entries", 10000, "entries per batch")

// BenchmarkBatchEntryCreate creates -entries entries in one CLI call per
// iteration (fresh SPIFFE IDs each time) and reports entries/s.
func BenchmarkBatchEntryCreate(b *testing.B) {
	sigil, err := e2e.Build(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("spire-server/postgres", func(b *testing.B) {
		dir := b.TempDir()
		bin, sock, _ := startServer(b, dir)
		type sel struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		}
		type entry struct {
			SpiffeID  string `json:"spiffe_id"`
			ParentID  string `json:"parent_id"`
			Selectors []sel  `json:"selectors"`
		}
		measure(b, dir, func(i int) any {
			list := make([]entry, *entries)
			for j := range list {
				list[j] = entry{SpiffeID: fmt.Sprintf("spiffe://bench.test/run%d/w%d", i, j), ParentID: "spiffe://bench.test/spire/agent/join_token/bench",
					Selectors: []sel{{"unix", fmt.Sprintf("uid:%d", 100000+j)}}}
			}
			return map[string]any{"entries": list}
		}, func(file string) (string, string, error) {
			return runLong(bin.Path, "entry", "create", "-socketPath", sock, "-output", "json", "-data", file)
		})
		// Every entry was created (a failed one is listed, not fatal).
		out, _, err := bin.Run(b, "entry", "count", "-socketPath", sock)
		if want := fmt.Sprintf("%d registration entries", *entries*b.N); err != nil || !strings.Contains(out, want) {
			b.Fatalf("entry count printed %q (%v), want %q", out, err, want)
		}
	})
	for _, store := range []string{"sqlite", "postgres"} {
		b.Run("sigil/"+store, func(b *testing.B) {
			dir := b.TempDir()
			admin := filepath.Join(dir, "ca", "admin.sock")
			storeCfg := ""
			if store == "postgres" {
				storeCfg = fmt.Sprintf("store:\n  type: postgres\n  dsn: %q\n", pgtest.Start(b))
			}
			cfg := filepath.Join(dir, "ca.yaml")
			e2e.WriteFile(b, cfg, fmt.Sprintf("trust_domain: bench.test\ndata_dir: %s\nserver_address: 127.0.0.1:%s\n%s",
				filepath.Join(dir, "ca"), port(b), storeCfg), 0o600)
			ca := sigil.Start(b, "ca", "run", "--config", cfg)
			e2e.WaitForSocket(b, ca, admin, 60*time.Second)
			type entry struct {
				SpiffeID  string   `json:"spiffe_id"`
				ParentID  string   `json:"parent_id"`
				Selectors []string `json:"selectors"`
			}
			measure(b, dir, func(i int) any {
				list := make([]entry, *entries)
				for j := range list {
					list[j] = entry{SpiffeID: fmt.Sprintf("spiffe://bench.test/run%d/w%d", i, j), ParentID: "spiffe://bench.test/sigil/agent/join_token/bench",
						Selectors: []string{fmt.Sprintf("unix:uid:%d", 100000+j)}}
				}
				return list
			}, func(file string) (string, string, error) {
				return runLong(sigil.Path, "entry", "create", "--admin-socket", admin, "-o", "json", "--file", file)
			})
		})
	}
}

// measure writes each iteration's file outside the timer and times create.
func measure(b *testing.B, dir string, doc func(i int) any, create func(file string) (string, string, error)) {
	b.Helper()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		data, err := json.Marshal(doc(i))
		if err != nil {
			b.Fatal(err)
		}
		file := filepath.Join(dir, fmt.Sprintf("entries-%d.json", i))
		if err := os.WriteFile(file, data, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		out, errOut, err := create(file)
		total += time.Since(start)
		if err != nil {
			b.Fatalf("create %d entries: %v\n%s\n%s", *entries, err, tail(out), tail(errOut))
		}
	}
	b.ReportMetric(float64(*entries)*float64(b.N)/total.Seconds(), "entries/s")
}

// runLong runs a CLI call with 10 minutes to finish (e2e.Binary.Run gives
// 60 s, less than a big batch takes on a loaded box).
func runLong(path string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

func port(b *testing.B) string {
	addr := e2e.FreeAddr(b)
	return addr[strings.LastIndex(addr, ":")+1:]
}

func waitOK(b *testing.B, f func() error) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("not ready within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var svids = flag.Int("svids", 1000, "SVIDs the SPIRE agent holds in BenchmarkAgentRSS")

// BenchmarkAgentRSS reports a real spire-agent's VmRSS growth per 1,000
// cached X509-SVIDs: the agent's RSS once it has created -svids SVIDs
// (entries parented to it) minus its RSS holding none, both 5 s after
// settling, as hack/fleet --agent-rss does for Sigil's agent.
func BenchmarkAgentRSS(b *testing.B) {
	agentBin := e2e.SPIRETool(b, "spire-agent")
	dir := b.TempDir()
	server, sock, serverPort := startServer(b, dir)
	out, _, err := server.Run(b, "token", "generate", "-socketPath", sock)
	tok, ok := strings.CutPrefix(strings.SplitN(out, "\n", 2)[0], "Token: ")
	if err != nil || !ok {
		b.Fatalf("token generate: %v\n%s", err, out)
	}
	bundle := filepath.Join(dir, "bundle.pem")
	pemOut, _, err := server.Run(b, "bundle", "show", "-socketPath", sock)
	if err != nil {
		b.Fatal(err)
	}
	e2e.WriteFile(b, bundle, pemOut, 0o644)
	agentCfg := filepath.Join(dir, "agent.conf")
	e2e.WriteFile(b, agentCfg, fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "%s"
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = "bench.test"
    join_token = %q
    x509_svid_cache_max_size = %d
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, filepath.Join(dir, "agent"), serverPort, filepath.Join(dir, "agent.sock"), bundle, tok, *svids), 0o600)
	var log lockedBuffer
	agent := exec.Command(agentBin, "run", "-config", agentCfg)
	agent.Stdout, agent.Stderr = &log, &log
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	created := func() int { return strings.Count(log.String(), "Creating X509-SVID") }
	waitOK(b, func() error {
		if !strings.Contains(log.String(), "Starting Workload and SDS APIs") {
			return fmt.Errorf("agent not serving yet:\n%s", tail(log.String()))
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	before := rss(b, agent.Process.Pid)

	type sel struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	type entry struct {
		SpiffeID  string `json:"spiffe_id"`
		ParentID  string `json:"parent_id"`
		Selectors []sel  `json:"selectors"`
	}
	list := make([]entry, *svids)
	for j := range list {
		list[j] = entry{SpiffeID: fmt.Sprintf("spiffe://bench.test/w%d", j), ParentID: "spiffe://bench.test/spire/agent/join_token/" + tok,
			Selectors: []sel{{"unix", fmt.Sprintf("uid:%d", 100000+j)}}}
	}
	data, err := json.Marshal(map[string]any{"entries": list})
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, "entries.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		b.Fatal(err)
	}
	if out, errOut, err := runLong(server.Path, "entry", "create", "-socketPath", sock, "-output", "json", "-data", file); err != nil {
		b.Fatalf("entry create: %v\n%s\n%s", err, tail(out), tail(errOut))
	}
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	for created() < *svids {
		if time.Now().After(deadline) {
			b.Fatalf("the agent created %d of %d SVIDs within 10 minutes", created(), *svids)
		}
		time.Sleep(500 * time.Millisecond)
	}
	held := time.Since(start)
	time.Sleep(5 * time.Second)
	after := rss(b, agent.Process.Pid)
	b.ReportMetric(float64(before)/(1<<20), "MB-baseline")
	b.ReportMetric(float64(after-before)/(1<<20)/(float64(*svids)/1000), "MB/1000-SVIDs")
	b.ReportMetric(held.Seconds(), "s-entries-to-SVIDs")
}

// rss reads a process's VmRSS in bytes.
func rss(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				b.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// lockedBuffer is an output buffer safe for the process's writes and the
// benchmark's reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startServer starts a spire-server (trust domain bench.test, join_token
// node attestation, a real PostgreSQL) in dir and waits until it is
// healthy; it returns the binary, its API socket and its port.
func startServer(b *testing.B, dir string) (bin *e2e.Binary, sock, serverPort string) {
	bin = &e2e.Binary{Path: e2e.SPIRETool(b, "spire-server")}
	sock = filepath.Join(dir, "server.sock")
	serverPort = port(b)
	cfg := filepath.Join(dir, "server.conf")
	e2e.WriteFile(b, cfg, fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%s"
    socket_path = %q
    trust_domain = "bench.test"
    data_dir = %q
    log_level = "WARN"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "postgres"
            connection_string = %q
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`, serverPort, sock, filepath.Join(dir, "data"), pgtest.Start(b)), 0o600)
	srv := bin.Start(b, "run", "-config", cfg)
	e2e.WaitForSocket(b, srv, sock, 60*time.Second)
	waitOK(b, func() error { _, _, err := bin.Run(b, "healthcheck", "-socketPath", sock); return err })
	return bin, sock, serverPort
}
