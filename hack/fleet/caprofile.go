package main

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
)

// goStats is the Go runtime's own account of a CA process, from its
// /metrics: what the process's RSS is made of.
type goStats struct {
	HeapInuse  int64 // go_memstats_heap_inuse_bytes
	StackInuse int64 // go_memstats_stack_inuse_bytes
	Goroutines int64 // go_goroutines
}

// goStats reads p's /metrics on its health address.
func (p *caProc) goStats(ctx context.Context) (goStats, error) {
	var st goStats
	body, err := p.get(ctx, "/metrics", 10*time.Second)
	if err != nil {
		return st, err
	}
	defer body.Close()
	sc := bufio.NewScanner(io.LimitReader(body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var into *int64
		switch name {
		case "go_memstats_heap_inuse_bytes":
			into = &st.HeapInuse
		case "go_memstats_stack_inuse_bytes":
			into = &st.StackInuse
		case "go_goroutines":
			into = &st.Goroutines
		default:
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return st, fmt.Errorf("%s /metrics %s: %w", p.name, name, err)
		}
		*into = int64(f)
	}
	return st, sc.Err()
}

// saveProfile writes p's /debug/pprof/<kind> (with query, e.g.
// "seconds=30" for a CPU profile) to dir/<name>-<label>.<kind>.
func (p *caProc) saveProfile(ctx context.Context, dir, kind, query, label string, timeout time.Duration) (string, error) {
	path := "/debug/pprof/" + kind
	if query != "" {
		path += "?" + query
	}
	body, err := p.get(ctx, path, timeout)
	if err != nil {
		return "", err
	}
	defer body.Close()
	file := filepath.Join(dir, p.name+"-"+label+"."+kind)
	out, err := os.Create(file)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, io.LimitReader(body, 256<<20)); err != nil {
		out.Close()
		return "", fmt.Errorf("%s %s: %w", p.name, path, err)
	}
	return file, out.Close()
}

func (p *caProc) get(ctx context.Context, path string, timeout time.Duration) (io.ReadCloser, error) {
	if p.health == "" {
		return nil, fmt.Errorf("%s has no health address", p.name)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.health+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s %s: %w", p.name, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s %s: %s", p.name, path, resp.Status)
	}
	return cancelBody{resp.Body, cancel}, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelBody) Close() error { err := c.ReadCloser.Close(); c.cancel(); return err }

// fanout is the cost of one bundle change reaching the fleet at rest:
// from the admin call that sets a federated bundle until every agent
// held the new bundle set, nothing else happening (measured once the
// fleet is ready, before churn, renewals and the key rotation).
type fanout struct {
	Wall   time.Duration   // SetBundle -> the last agent holds it
	CPU    []time.Duration // each CA's CPU time over Wall
	Agents int             // agents that held it by then
}

// fanoutTD is the trust domain of the bundle measureFanout sets.
const fanoutTD = "fanout.test"

// measureFanout sets a bundle for fanoutTD (the CA's own roots: any CA
// certificate will do) and waits up to a minute for every agent to sync
// it, sampling the CAs' CPU time at both ends.
func (f *fleet) measureFanout(ctx context.Context, admin adminv1.AdminClient, cas []*caProc, agents int) (*fanout, error) {
	var pemData []byte
	for _, r := range f.roots {
		pemData = append(pemData, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	before := make([]procSample, len(cas))
	for i, p := range cas {
		before[i], _ = sampleProc(p.cmd.Process.Pid)
	}
	f.mu.Lock()
	f.fanStart, f.fanSeen = time.Now(), map[*simAgent]bool{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.fanStart, f.fanSeen = time.Time{}, nil
		f.mu.Unlock()
	}()
	start := time.Now()
	if _, err := admin.SetBundle(ctx, &adminv1.SetBundleRequest{TrustDomain: fanoutTD, Format: adminv1.BundleFormat_BUNDLE_FORMAT_PEM, Data: pemData}); err != nil {
		return nil, fmt.Errorf("set bundle %s: %w", fanoutTD, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		f.mu.Lock()
		seen := len(f.fanSeen)
		f.mu.Unlock()
		if seen >= agents || time.Now().After(deadline) {
			out := &fanout{Wall: time.Since(start), Agents: seen}
			for i, p := range cas {
				s, _ := sampleProc(p.cmd.Process.Pid)
				out.CPU = append(out.CPU, s.cpu-before[i].cpu)
			}
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
