package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// Config is one simulation.
type Config struct {
	Sigil       string // the sigil binary
	Dir         string // working directory for the CAs' data; empty: a temporary one
	TrustDomain string
	Replicas    int    // CA processes; more than one needs PostgresDSN
	PostgresDSN string // empty: SQLite
	Agents      int
	Entries     int           // spread over the agents round-robin
	Churn       int           // entry writes per second while measuring (half create, half delete)
	Duration    time.Duration // the measured phase, after every agent holds its SVIDs
	SVIDTTL     time.Duration // X.509 TTL of the entries (0: the CA's default); short TTLs make agents rotate while measuring
	Rotate      bool          // prepare and activate a new CA key halfway through
	// RenewEvery is how often each agent renews its own SVID: while
	// measuring, Agents × Duration / RenewEvery of them renew (every one
	// once when RenewEvery ≤ Duration), at random times; 0: none. The
	// default, 30 min, is an agent renewing at half of the CA's default
	// 1 h agent SVID TTL.
	RenewEvery  time.Duration
	Parallel    int           // agents attesting at once
	ReadyWithin time.Duration // give up when the fleet is not ready by then
	// ProfileDir, when set, serves the CAs' /debug/pprof/ and saves their
	// heap and allocation profiles there when the fleet is ready and at
	// the end, and a CPU profile of the measured phase.
	ProfileDir string
}

func (c *Config) check() error {
	switch {
	case c.Sigil == "":
		return errors.New("--sigil: the sigil binary is required")
	case c.Agents < 1 || c.Entries < 0:
		return errors.New("--agents must be at least 1 and --entries at least 0")
	case c.Replicas < 1:
		return errors.New("--replicas must be at least 1")
	case c.Replicas > 1 && c.PostgresDSN == "":
		return errors.New("--replicas above 1 needs --postgres-dsn (replicas share a PostgreSQL store)")
	case c.Churn < 0 || c.Duration < 0:
		return errors.New("--churn and --duration must not be negative")
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "fleet.test"
	}
	if c.Parallel <= 0 {
		c.Parallel = 32
	}
	if c.ReadyWithin <= 0 {
		c.ReadyWithin = 30 * time.Minute
	}
	return nil
}

// maxSamples bounds the lag samples kept.
const maxSamples = 1 << 20

// fleet is one running simulation.
type fleet struct {
	cfg   Config
	td    spiffeid.TrustDomain
	roots []*x509.Certificate

	signed atomic.Int64

	mu      sync.Mutex
	pending map[string]time.Time // change key -> when its write started
	// delOwner is the agent of each awaited deletion, by entry ID: a
	// full sync response tells a deletion by leaving the entry out.
	delOwner  map[string]*simAgent
	lags      []time.Duration
	lagAt     []time.Time // when each change in lags was written
	errAt     []time.Time // when each counted error happened (bounded like lags)
	rotStart  time.Time   // zero: no rotation yet
	activated time.Time   // zero: the rotation's new key is not active yet
	// fanStart and fanSeen follow measureFanout's bundle: zero while
	// none is awaited, else the agents that synced a bundle since.
	fanStart time.Time
	fanSeen  map[*simAgent]bool
	rotLags  []time.Duration
	errs     map[string]int
	resyncs  int // streams the CA ended after an agent renewed
	// staleSigns counts CSRs refused because their entry was deleted
	// before the agent synced the deletion.
	staleSigns int
	firstErr   []string
}

func (f *fleet) countErr(ctx context.Context, op string, err error) {
	if ctx.Err() != nil || status.Code(err) == codes.Canceled {
		return // our own shutdown or a connection we replaced
	}
	if op == "sign" && strings.Contains(err.Error(), "does not exist or is not authorized") {
		// Churn: the agent asked for an entry deleted since its last
		// sync; it drops it when the deletion arrives.
		f.mu.Lock()
		f.staleSigns++
		f.mu.Unlock()
		return
	}
	if c := status.Code(err); (c == codes.Unauthenticated || c == codes.PermissionDenied) && strings.Contains(err.Error(), "renewed") {
		// The CA ends (or refuses) the streams of an agent's previous
		// SVID once it renewed; the cache syncs again on the new
		// connection.
		f.mu.Lock()
		f.resyncs++
		f.mu.Unlock()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[op]++
	if len(f.errAt) < maxSamples {
		f.errAt = append(f.errAt, time.Now())
	}
	if len(f.firstErr) < 5 {
		f.firstErr = append(f.firstErr, op+": "+err.Error())
	}
}

func (f *fleet) expect(key string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending[key] = at
}

// expectDelete awaits the deletion of entry id at agent a.
func (f *fleet) expectDelete(id string, a *simAgent, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending["deleted:"+id] = at
	f.delOwner[id] = a
}

// fullSeen counts every awaited deletion at a that a full sync response
// (holding the entry IDs in present) no longer lists.
func (f *fleet) fullSeen(a *simAgent, present map[string]bool, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, owner := range f.delOwner {
		if owner != a || present[id] {
			continue
		}
		delete(f.delOwner, id)
		if t0, ok := f.pending["deleted:"+id]; ok {
			delete(f.pending, "deleted:"+id)
			f.addLag(t0, at)
		}
	}
}

// addLag keeps one change's lag, written at t0 and seen at at; f.mu held.
func (f *fleet) addLag(t0, at time.Time) {
	if len(f.lags) < maxSamples {
		f.lags = append(f.lags, at.Sub(t0))
		f.lagAt = append(f.lagAt, t0)
	}
}

// unexpect forgets key and reports whether it was still awaited.
func (f *fleet) unexpect(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.pending[key]
	delete(f.pending, key)
	return ok
}

// awaited counts the changes not seen yet.
func (f *fleet) awaited() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

func (f *fleet) seen(key string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t0, ok := f.pending[key]; ok {
		delete(f.pending, key)
		if id, ok := strings.CutPrefix(key, "deleted:"); ok {
			delete(f.delOwner, id)
		}
		f.addLag(t0, at)
	}
}

func (f *fleet) bundleSeen(a *simAgent, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.fanStart.IsZero() && at.After(f.fanStart) {
		f.fanSeen[a] = true
	}
	if f.rotStart.IsZero() || a.rotSeen {
		return
	}
	a.rotSeen = true
	f.rotLags = append(f.rotLags, at.Sub(f.rotStart))
}

// Report is what a simulation measured.
type Report struct {
	Replicas, Agents, Entries int
	Store                     string
	Setup                     time.Duration // tokens and entries written
	Ready                     time.Duration // from the first attestation until every agent held every SVID
	InitialSignRate           float64       // SVIDs signed per second until ready
	Measured                  time.Duration
	Writes                    int     // churn writes while measuring
	SignRate                  float64 // SVIDs signed per second while measuring
	LagP50, LagP99, LagMax    time.Duration
	LagSamples, LagMissed     int // changes seen; changes not seen within 30 s
	RotationP50, RotationP99  time.Duration
	RotationSeen              int
	Renewed                   int
	RenewEvery                time.Duration // Config.RenewEvery
	Resyncs                   int           // sync streams ended by the CA after a renewal (expected, not errors)
	StaleSigns                int           // CSRs for entries deleted before the agent synced it (expected with churn)
	Missed                    []string      // up to 5 changes never seen
	Inconsistent              int           // agents whose entry count differs from the CA's at the end
	CA                        []CAUsage
	Fanout                    *fanout  // a new bundle reaching every agent of the ready fleet
	Profiles                  []string // files written under Config.ProfileDir
	Errors                    map[string]int
	FirstErrors               []string
	// Timeline splits the measured phase in windows: where lag and
	// errors came from. RotationAt and ActivatedAt are offsets into it
	// (negative: none).
	Timeline                []window
	RotationAt, ActivatedAt time.Duration
}

// CAUsage is one CA process's cost while measuring.
type CAUsage struct {
	Name         string
	CPU          float64 // cores busy on average (1.0 = one core)
	RSS, PeakRSS int64
	ReadyCPU     float64 // cores busy on average until the fleet was ready
	// ReadyGo and EndGo are the Go runtime's account when the fleet was
	// ready (after a GC when profiling) and at the end of the measured
	// phase.
	ReadyGo, EndGo goStats
}

// Run starts the CAs, the fleet, measures, and stops everything.
func Run(ctx context.Context, cfg Config, logf func(format string, args ...any)) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "sigil-fleet-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("--trust-domain: %w", err)
	}
	f := &fleet{cfg: cfg, td: td, pending: map[string]time.Time{}, delOwner: map[string]*simAgent{}, errs: map[string]int{}}
	rep := &Report{Replicas: cfg.Replicas, Agents: cfg.Agents, Entries: cfg.Entries, Store: "sqlite"}
	if cfg.PostgresDSN != "" {
		rep.Store = "postgres"
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
	for _, der := range b.GetBundle().GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		f.roots = append(f.roots, c)
	}

	// Tokens, then entries.
	start := time.Now()
	agents := make([]*simAgent, cfg.Agents)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range agents {
		g.Go(func() error {
			r, err := admin.CreateJoinToken(gctx, &adminv1.CreateJoinTokenRequest{Ttl: durationpb.New(24 * time.Hour)})
			if err != nil {
				return fmt.Errorf("create join token: %w", err)
			}
			agents[i] = &simAgent{f: f, token: r.GetToken(), addr: cas[i%len(cas)].addr,
				id: spiffeid.RequireFromPath(td, "/sigil/agent/join_token/"+r.GetToken())}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	w := &writer{f: f, admin: admin, agents: agents, rng: rand.New(rand.NewPCG(1, 2))}
	for start := 0; start < cfg.Entries; start += 1000 {
		var batch []*typesv1.Entry
		for j := start; j < min(start+1000, cfg.Entries); j++ {
			batch = append(batch, w.entry(j%len(agents)))
		}
		if err := w.create(ctx, batch, false); err != nil {
			return nil, err
		}
	}
	rep.Setup = time.Since(start)
	logf("setup: %d join tokens and %d entries written in %s", cfg.Agents, cfg.Entries, rep.Setup.Round(time.Millisecond))

	// The fleet: attest, then run each agent's cache.
	runCtx, stopAgents := context.WithCancel(ctx)
	var running sync.WaitGroup
	defer func() {
		stopAgents()
		running.Wait()
		for _, a := range agents {
			if a != nil {
				a.close()
			}
		}
	}()
	sampler := newSampler(cas)
	sctx, stopSampler := context.WithCancel(ctx)
	go sampler.run(sctx)
	readyStart := time.Now()
	signedBefore := f.signed.Load()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(cfg.Parallel)
	for _, a := range agents {
		g.Go(func() error {
			if err := a.attest(gctx); err != nil {
				return fmt.Errorf("agent %s: %w", a.id, err)
			}
			if err := a.start(); err != nil {
				return err
			}
			running.Add(1)
			go func() { defer running.Done(); _ = a.cache.Run(runCtx) }()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		stopSampler()
		return nil, err
	}
	logf("attested %d agents in %s", len(agents), time.Since(readyStart).Round(time.Millisecond))
	if err := w.waitConsistent(ctx, cfg.ReadyWithin); err != nil {
		stopSampler()
		return nil, fmt.Errorf("fleet not ready: %w", err)
	}
	rep.Ready = time.Since(readyStart)
	rep.InitialSignRate = float64(f.signed.Load()-signedBefore) / rep.Ready.Seconds()
	readyUsage := sampler.usage()
	stopSampler()
	for i, p := range cas {
		if cfg.ProfileDir != "" {
			for _, kind := range []string{"heap", "allocs"} {
				file, err := p.saveProfile(ctx, cfg.ProfileDir, kind, "gc=1", "ready", time.Minute)
				if err != nil {
					return nil, err
				}
				rep.Profiles = append(rep.Profiles, file)
			}
		}
		if readyUsage[i].ReadyGo, err = p.goStats(ctx); err != nil {
			return nil, err
		}
	}
	logf("ready: every agent holds its SVIDs after %s (%.0f SVIDs/s)", rep.Ready.Round(time.Millisecond), rep.InitialSignRate)

	if rep.Fanout, err = f.measureFanout(ctx, admin, cas, len(agents)); err != nil {
		return nil, err
	}
	logf("fan-out: a new bundle reached %d agents in %s", rep.Fanout.Agents, rep.Fanout.Wall.Round(time.Millisecond))

	// The measured phase.
	sampler = newSampler(cas)
	measureStart := time.Now()
	signedBefore = f.signed.Load()
	writesBefore := w.written()
	mctx, stopMeasure := context.WithTimeout(ctx, cfg.Duration)
	defer stopMeasure()
	g, gctx = errgroup.WithContext(mctx)
	g.Go(func() error { sampler.run(gctx); return nil })
	if cfg.ProfileDir != "" {
		var pmu sync.Mutex
		for _, p := range cas {
			g.Go(func() error {
				// Its own context: the profile ends with the phase.
				file, err := p.saveProfile(ctx, cfg.ProfileDir, "profile", fmt.Sprintf("seconds=%d", max(1, int(cfg.Duration.Seconds()))), "measure", cfg.Duration+time.Minute)
				if err != nil {
					f.countErr(ctx, "profile", err)
					return nil
				}
				pmu.Lock()
				rep.Profiles = append(rep.Profiles, file)
				pmu.Unlock()
				return nil
			})
		}
	}
	if cfg.Churn > 0 {
		g.Go(func() error { return w.churn(gctx, cfg.Churn) })
	}
	if cfg.Rotate {
		g.Go(func() error { return w.rotate(gctx, cfg.Duration/2, logf) })
	}
	var renewed atomic.Int64
	if cfg.RenewEvery > 0 {
		share := min(1, float64(cfg.Duration)/float64(cfg.RenewEvery))
		for _, a := range agents {
			if rand.Float64() >= share {
				continue
			}
			at := time.Duration(rand.Int64N(int64(max(cfg.Duration*8/10, time.Millisecond))))
			g.Go(func() error {
				select {
				case <-gctx.Done():
					return nil
				case <-time.After(at):
				}
				if err := a.renew(gctx); err != nil {
					f.countErr(gctx, "renew", err)
					return nil
				}
				renewed.Add(1)
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	rep.Measured = time.Since(measureStart)
	rep.SignRate = float64(f.signed.Load()-signedBefore) / rep.Measured.Seconds()
	rep.Writes = w.written() - writesBefore
	rep.Renewed, rep.RenewEvery = int(renewed.Load()), cfg.RenewEvery
	measured := sampler.usage()
	for i, p := range cas {
		measured[i].ReadyCPU = readyUsage[i].CPU
		measured[i].PeakRSS = max(measured[i].PeakRSS, readyUsage[i].PeakRSS)
		measured[i].ReadyGo = readyUsage[i].ReadyGo
		if cfg.ProfileDir != "" {
			for _, kind := range []string{"heap", "allocs"} {
				file, err := p.saveProfile(ctx, cfg.ProfileDir, kind, "gc=1", "end", time.Minute)
				if err != nil {
					return nil, err
				}
				rep.Profiles = append(rep.Profiles, file)
			}
		}
		if measured[i].EndGo, err = p.goStats(ctx); err != nil {
			return nil, err
		}
	}
	rep.CA = measured

	// Let the last changes arrive, then check every agent against the CA.
	// Until every awaited change is seen, not only until the counts
	// match: a create and a deletion for one agent still on their way
	// leave its count as it should be.
	measureEnd := time.Now()
	if w.waitConsistent(ctx, 30*time.Second) == nil {
		if n := f.awaited(); n > 0 {
			logf("every agent holds as many entries as expected %s after the measured phase, with %d changes not seen yet: waiting for them",
				time.Since(measureEnd).Round(time.Millisecond), n)
		}
	}
	if err := w.waitSettled(ctx, max(0, 30*time.Second-time.Since(measureEnd))); err != nil {
		logf("%v", err)
	}
	rep.Inconsistent = w.inconsistent(true)
	f.mu.Lock()
	rep.LagMissed = len(f.pending)
	rep.LagSamples = len(f.lags)
	rep.LagP50, rep.LagP99, rep.LagMax = percentiles(f.lags)
	rep.RotationSeen = len(f.rotLags)
	rep.RotationP50, rep.RotationP99, _ = percentiles(f.rotLags)
	rep.Errors = maps2(f.errs)
	rep.Resyncs = f.resyncs
	rep.StaleSigns = f.staleSigns
	for k, at := range f.pending {
		if len(rep.Missed) < 5 {
			rep.Missed = append(rep.Missed, fmt.Sprintf("%s (written %s before the measured phase ended)", k, measureEnd.Sub(at).Round(time.Millisecond)))
		}
	}
	rep.FirstErrors = slices.Clone(f.firstErr)
	rep.Timeline = timeline(measureStart, measureEnd, f.lagAt, f.lags, f.errAt)
	rep.RotationAt, rep.ActivatedAt = since(measureStart, f.rotStart), since(measureStart, f.activated)
	f.mu.Unlock()
	return rep, nil
}

// timelineWindow is the length of one timeline window.
const timelineWindow = 5 * time.Second

// window is the changes written, and the errors met, in one timeline window.
type window struct {
	Start         time.Duration // from the start of the measured phase
	Changes       int
	P50, P99, Max time.Duration
	Errors        int
}

func timeline(start, end time.Time, lagAt []time.Time, lags []time.Duration, errAt []time.Time) []window {
	n := int(end.Sub(start)/timelineWindow) + 1
	ws := make([]window, n)
	byWin := make([][]time.Duration, n)
	for i := range ws {
		ws[i].Start = time.Duration(i) * timelineWindow
	}
	for i, t := range lagAt {
		if k := int(t.Sub(start) / timelineWindow); t.After(start) && k < n {
			byWin[k] = append(byWin[k], lags[i])
		}
	}
	for _, t := range errAt {
		if k := int(t.Sub(start) / timelineWindow); t.After(start) && k < n {
			ws[k].Errors++
		}
	}
	for i := range ws {
		ws[i].Changes = len(byWin[i])
		ws[i].P50, ws[i].P99, ws[i].Max = percentiles(byWin[i])
	}
	return ws
}

func since(start, t time.Time) time.Duration {
	if t.IsZero() {
		return -1
	}
	return t.Sub(start)
}

func maps2(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func percentiles(d []time.Duration) (p50, p99, maxd time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}
