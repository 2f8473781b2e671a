// Package spire measures SPIRE v1.14.5 beside Sigil on the same box: one
// batch of registration entries created through each one's CLI. Run:
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
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var entries = flag.Int("entries", 10000, "entries per batch")

const howTo = "SPIRE v1.14.5 is needed: run hack/setup/62-spire.sh (builds spire-server into ~/.cache/sigil/tools) or put it on PATH"

func tool(b *testing.B, name string) string {
	b.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		b.Fatalf("%s: %v. %s", name, err, howTo)
	}
	p := filepath.Join(dir, "sigil", "tools", name)
	if _, err := os.Stat(p); err != nil {
		b.Fatalf("%s not found on PATH nor at %s. %s", name, p, howTo)
	}
	return p
}

// BenchmarkBatchEntryCreate creates -entries entries in one CLI call per
// iteration (fresh SPIFFE IDs each time) and reports entries/s.
func BenchmarkBatchEntryCreate(b *testing.B) {
	sigil, err := e2e.Build(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("spire-server/postgres", func(b *testing.B) {
		bin := &e2e.Binary{Path: tool(b, "spire-server")}
		dir := b.TempDir()
		sock := filepath.Join(dir, "server.sock")
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
`, port(b), sock, filepath.Join(dir, "data"), pgtest.Start(b)), 0o600)
		srv := bin.Start(b, "run", "-config", cfg)
		e2e.WaitForSocket(b, srv, sock, 60*time.Second)
		waitOK(b, func() error { _, _, err := bin.Run(b, "healthcheck", "-socketPath", sock); return err })
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
