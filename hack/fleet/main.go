package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	var cfg Config
	var jsonOut bool
	flag.StringVar(&cfg.Sigil, "sigil", "", "the sigil binary (go build -o /tmp/sigil ./cmd/sigil)")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for the CAs' data (default: a temporary one, removed after)")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "fleet.test", "trust domain")
	flag.IntVar(&cfg.Replicas, "replicas", 1, "CA replicas (more than one needs --postgres-dsn)")
	flag.StringVar(&cfg.PostgresDSN, "postgres-dsn", "", "PostgreSQL store shared by the replicas (default: SQLite, one replica)")
	flag.IntVar(&cfg.Agents, "agents", 100, "simulated agents")
	flag.IntVar(&cfg.Entries, "entries", 1000, "registration entries, spread over the agents")
	flag.IntVar(&cfg.Churn, "churn", 10, "entry writes per second while measuring (creates and deletes alternate)")
	flag.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to measure once the fleet is ready")
	flag.DurationVar(&cfg.SVIDTTL, "svid-ttl", 0, "X.509 TTL of the entries (0: the CA's default); short ones make agents rotate while measuring")
	flag.BoolVar(&cfg.Rotate, "rotate", true, "prepare and activate a new CA key halfway through")
	flag.DurationVar(&cfg.RenewEvery, "renew-every", 30*time.Minute, "how often each agent renews its own SVID (30m: half the CA's default 1h agent TTL); at most --duration makes every agent renew once while measuring; 0: none")
	flag.IntVar(&cfg.Parallel, "parallel", 32, "agents attesting at once")
	flag.DurationVar(&cfg.ReadyWithin, "ready-within", 30*time.Minute, "give up when the fleet does not hold its SVIDs by then")
	flag.StringVar(&cfg.ProfileDir, "ca-profile-dir", "", "serve the CAs' /debug/pprof/ and save their heap and allocs profiles here when ready and at the end, and a CPU profile of the measured phase")
	flag.BoolVar(&jsonOut, "json", false, "print the report as JSON")
	agentHeap := flag.String("agent-heap-dir", "", "with --agent-rss: write each agent's heap profile here as agent-N.heap")
	agentRSS := flag.String("agent-rss", "", "instead of a fleet: RSS of one real `sigil agent run` at these SVID counts, e.g. 0,1000,10000,50000")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logger := log.New(os.Stderr, "fleet: ", log.Ltime)
	if *agentRSS != "" {
		if err := runAgentRSS(ctx, cfg, *agentRSS, *agentHeap, logger); err != nil {
			logger.Print(err)
			os.Exit(1)
		}
		return
	}
	rep, err := Run(ctx, cfg, logger.Printf)
	if err != nil {
		logger.Print(err)
		os.Exit(1)
	}
	if jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	rep.Print(os.Stdout)
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Fprintf(w, "fleet: %d agents x %d entries, %d CA replica(s) on %s\n", r.Agents, r.Entries, r.Replicas, r.Store)
	fmt.Fprintf(w, "  setup (tokens + entries written): %s\n", r.Setup.Round(time.Millisecond))
	fmt.Fprintf(w, "  ready (attest to every SVID held): %s, %.0f SVIDs/s signed\n", r.Ready.Round(time.Millisecond), r.InitialSignRate)
	fmt.Fprintf(w, "  measured %s: %d churn writes, %.0f SVIDs/s signed, %d agents renewed (each every %s; %d sync streams resumed after it)\n", r.Measured.Round(time.Millisecond), r.Writes, r.SignRate, r.Renewed, r.RenewEvery, r.Resyncs)
	fmt.Fprintf(w, "  sync lag (entry write -> agent sees it): p50 %s, p99 %s, max %s (%d changes, %d never seen)\n", ms(r.LagP50), ms(r.LagP99), ms(r.LagMax), r.LagSamples, r.LagMissed)
	if r.RotationSeen > 0 {
		fmt.Fprintf(w, "  CA rotation (prepare -> agent has the new bundle): p50 %s, p99 %s (%d agents)\n", ms(r.RotationP50), ms(r.RotationP99), r.RotationSeen)
	}
	if f := r.Fanout; f != nil {
		var cpu []string
		for _, c := range f.CPU {
			cpu = append(cpu, fmt.Sprintf("%.2f s", c.Seconds()))
		}
		fmt.Fprintf(w, "  new bundle fan-out at rest (set bundle -> %d agents hold it): %s, CA CPU %s\n", f.Agents, f.Wall.Round(time.Millisecond), strings.Join(cpu, " + "))
	}
	kb := func(b int64) float64 { return float64(b) / 1024 / float64(max(1, r.Agents/max(1, r.Replicas))) }
	for _, c := range r.CA {
		fmt.Fprintf(w, "  %s: CPU %.2f cores while measuring (%.2f until ready), RSS %d MB (peak %d MB)\n", c.Name, c.CPU, c.ReadyCPU, c.RSS>>20, c.PeakRSS>>20)
		for _, g := range []struct {
			when string
			s    goStats
		}{{"ready", c.ReadyGo}, {"end", c.EndGo}} {
			fmt.Fprintf(w, "    at %s: Go heap in use %d MB (%.1f KB per agent), stacks %d MB (%.1f KB per agent), %d goroutines\n", g.when,
				g.s.HeapInuse>>20, kb(g.s.HeapInuse), g.s.StackInuse>>20, kb(g.s.StackInuse), g.s.Goroutines)
		}
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(w, "  profile: %s\n", p)
	}
	if len(r.Timeline) > 0 {
		fmt.Fprintf(w, "  timeline (by write time; rotation prepared at %s, activated at %s):\n", r.RotationAt.Round(time.Millisecond), r.ActivatedAt.Round(time.Millisecond))
		for _, win := range r.Timeline {
			fmt.Fprintf(w, "    %5s  %4d changes  p50 %9s  p99 %9s  max %9s  %5d errors\n", win.Start, win.Changes, ms(win.P50), ms(win.P99), ms(win.Max), win.Errors)
		}
	}
	fmt.Fprintf(w, "  agents inconsistent at the end: %d; CSRs refused for entries deleted meanwhile: %d\n", r.Inconsistent, r.StaleSigns)
	if len(r.Missed) > 0 {
		fmt.Fprintf(w, "  never seen: %s\n", strings.Join(r.Missed, " "))
	}
	var ops []string
	for op, n := range r.Errors {
		ops = append(ops, fmt.Sprintf("%s=%d", op, n))
	}
	sort.Strings(ops)
	fmt.Fprintf(w, "  errors: %s\n", strings.Join(append(ops, "")[:max(len(ops), 1)], " "))
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "    %s\n", e)
	}
}

func runAgentRSS(ctx context.Context, cfg Config, sizes, heapDir string, logger *log.Logger) error {
	var ns []int
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return fmt.Errorf("--agent-rss: %q is not a count", s)
		}
		ns = append(ns, n)
	}
	if len(ns) == 0 || ns[0] != 0 {
		ns = append([]int{0}, ns...)
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "sigil-agentrss-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	res, err := MeasureAgentRSS(ctx, cfg.Sigil, dir, heapDir, ns, logger.Printf)
	if err != nil {
		return err
	}
	fmt.Println("| SVIDs cached | agent RSS | MB per 1,000 above an empty agent | anonymous RSS | its MB per 1,000 | Go heap in use | heap idle, not released | start to all held |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	mb := func(b int64) float64 { return float64(b) / (1 << 20) }
	for _, r := range res {
		fmt.Printf("| %d | %.1f MB | %.2f | %.1f MB | %.2f | %.1f MB | %.1f MB | %s |\n", r.SVIDs, mb(r.RSS), r.PerThousand,
			mb(r.Anon), r.PerThousandAnon, mb(r.HeapInuse), mb(r.HeapIdle), r.Minted.Round(time.Millisecond))
	}
	return nil
}
