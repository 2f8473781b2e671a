package main

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// AgentRSS is the resident set of one real `sigil agent run` holding SVIDs.
type AgentRSS struct {
	SVIDs       int
	RSS         int64   // after every SVID is held and a GC cycle or two ran
	PerThousand float64 // MB per 1,000 SVIDs above the agent holding none
	// Anon is the anonymous part of RSS (heap, stacks): the binary's file
	// pages, which vary by some 20 MB from one start to the next with the
	// page cache, are left out.
	Anon            int64
	PerThousandAnon float64
	Minted          time.Duration // from start to every SVID held
	// Go's own account of the same moment, from the agent's /metrics.
	HeapInuse int64 // spans holding objects, live or not yet swept
	HeapIdle  int64 // idle spans not yet returned to the OS
	Stacks    int64
}

// MeasureAgentRSS starts one CA (SQLite) and, for each size, one real
// agent whose entries number that size, and reads the agent's VmRSS once
// it holds every SVID. sizes should start with 0 (the baseline).
// With heapDir set, the agent's heap profile at that moment is written
// there as agent-N.heap (go tool pprof -sample_index=inuse_space).
func MeasureAgentRSS(ctx context.Context, sigil, dir, heapDir string, sizes []int, logf func(string, ...any)) ([]AgentRSS, error) {
	cfg := Config{Sigil: sigil, TrustDomain: "fleet.test", Replicas: 1, Agents: 1}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cas, err := startCAs(ctx, cfg, dir)
	defer func() {
		for _, p := range cas {
			p.stop()
		}
	}()
	if err != nil {
		return nil, err
	}
	admin, conn, err := cas[0].dialAdmin(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	b, err := admin.GetBundle(ctx, &adminv1.GetBundleRequest{TrustDomain: cfg.TrustDomain})
	if err != nil {
		return nil, fmt.Errorf("get bundle: %w", err)
	}
	var bundlePEM []byte
	for _, der := range b.GetBundle().GetX509Authorities() {
		bundlePEM = append(bundlePEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	bundleFile := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundleFile, bundlePEM, 0o600); err != nil {
		return nil, err
	}
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	var out []AgentRSS
	for k, n := range sizes {
		tok, err := admin.CreateJoinToken(ctx, &adminv1.CreateJoinTokenRequest{Ttl: durationpb.New(time.Hour)})
		if err != nil {
			return out, fmt.Errorf("create join token: %w", err)
		}
		parent := spiffeid.RequireFromPath(td, "/sigil/agent/join_token/"+tok.GetToken()).String()
		for start := 0; start < n; start += 1000 {
			var batch []*typesv1.Entry
			for j := start; j < min(start+1000, n); j++ {
				batch = append(batch, &typesv1.Entry{SpiffeId: fmt.Sprintf("spiffe://%s/rss%d/w/%d", td.Name(), k, j), ParentId: parent,
					Selectors: []string{fmt.Sprintf("unix:uid:%d", 1000+j%60000)}})
			}
			if _, err := admin.CreateEntries(ctx, &adminv1.CreateEntriesRequest{Entries: batch}); err != nil {
				return out, fmt.Errorf("create entries: %w", err)
			}
		}
		health, err := freeAddr()
		if err != nil {
			return out, err
		}
		adir := filepath.Join(dir, fmt.Sprintf("agent%d", k))
		conf := fmt.Sprintf("trust_domain: %s\nserver_address: %s\ndata_dir: %s\ntrust_bundle_file: %s\njoin_token: %s\nhealth_address: %s\npprof: true\n",
			td.Name(), cas[0].addr, adir, bundleFile, tok.GetToken(), health)
		confFile := filepath.Join(dir, fmt.Sprintf("agent%d.yaml", k))
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			return out, err
		}
		heapFile := ""
		if heapDir != "" {
			heapFile = filepath.Join(heapDir, fmt.Sprintf("agent-%d.heap", n))
		}
		r, err := measureAgent(ctx, sigil, confFile, health, heapFile, n)
		if err != nil {
			return out, err
		}
		if len(out) > 0 && n > 0 {
			r.PerThousand = float64(r.RSS-out[0].RSS) / (1 << 20) / (float64(n) / 1000)
			r.PerThousandAnon = float64(r.Anon-out[0].Anon) / (1 << 20) / (float64(n) / 1000)
		}
		logf("agent with %d SVIDs: RSS %d MB, %.2f MB per 1,000 (anonymous %d MB, %.2f MB per 1,000; minted in %s); Go heap in use %d MB, idle not released %d MB, stacks %d MB",
			n, r.RSS>>20, r.PerThousand, r.Anon>>20, r.PerThousandAnon, r.Minted.Round(time.Millisecond), r.HeapInuse>>20, r.HeapIdle>>20, r.Stacks>>20)
		out = append(out, r)
	}
	return out, nil
}

func measureAgent(ctx context.Context, sigil, confFile, health, heapFile string, n int) (AgentRSS, error) {
	r := AgentRSS{SVIDs: n}
	var buf lockedBuffer
	cmd := exec.Command(sigil, "agent", "run", "--config", confFile)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		select {
		case <-done:
			return r, fmt.Errorf("agent exited:\n%s", tail(buf.String()))
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if held, err := svidsCached(health); err == nil && held == n {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("agent does not hold %d SVIDs after 10m:\n%s", n, tail(buf.String()))
		}
	}
	r.Minted = time.Since(start)
	// Let the agent persist its SVIDs and the runtime settle, then read
	// the resident set as an operator's `ps` would.
	time.Sleep(5 * time.Second)
	s, err := sampleProc(cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	r.RSS, r.Anon = s.rss, s.anon
	m, err := goMemory(health)
	if err != nil {
		return r, err
	}
	r.HeapInuse, r.HeapIdle, r.Stacks = m["go_memstats_heap_inuse_bytes"], m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"], m["go_memstats_stack_inuse_bytes"]
	if heapFile != "" {
		if err := fetchTo(heapFile, "http://"+health+"/debug/pprof/heap"); err != nil {
			return r, err
		}
	}
	return r, nil
}

// goMemory reads the Go runtime's memory gauges (go_memstats_*_bytes)
// from the agent's /metrics.
func goMemory(health string) (map[string]int64, error) {
	resp, err := http.Get("http://" + health + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "go_memstats_") || !strings.HasSuffix(name, "_bytes") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		m[name] = int64(v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if _, ok := m["go_memstats_heap_inuse_bytes"]; !ok {
		return nil, fmt.Errorf("no go_memstats_heap_inuse_bytes in /metrics")
	}
	return m, nil
}

// fetchTo writes what url serves to path.
func fetchTo(path, url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// svidsCached reads sigil_agent_svids_cached from the agent's /metrics.
func svidsCached(health string) (int, error) {
	resp, err := http.Get("http://" + health + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "sigil_agent_svids_cached "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(v), err
		}
	}
	return 0, fmt.Errorf("no sigil_agent_svids_cached in /metrics")
}
