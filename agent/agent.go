package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	randv2 "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"

	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/nodeattest"
	"github.com/sigilhq/sigil/agent/svidstore"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/bundleconv"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/idleconn"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// ServeFunc serves workloads (Workload API, SDS) from the cache until ctx
// ends; ServeSocket makes one.
type ServeFunc func(ctx context.Context, c *cache.Cache) error

// Config configures an Agent.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// ServerAddress and ServerAddresses are the host:port of the CA's node
	// API on each replica (ServerAddress first); at least one is required.
	// A name that resolves to several addresses stands for each of them.
	// The agent talks to one replica and fails over to the next.
	ServerAddress   string
	ServerAddresses []string
	// LookupHost resolves the names in the server addresses; default
	// net.DefaultResolver.LookupHost.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	DataDir    string // where the agent's identity is persisted
	// SVIDDir is where the workloads' entries and X509-SVIDs are kept
	// across restarts (0600); default DataDir.
	SVIDDir string
	// BootstrapBundle holds the roots the agent trusts the CA by before it
	// has a persisted bundle.
	BootstrapBundle []*x509.Certificate
	// Attestor proves the node; nil means the agent can only run on a
	// persisted identity. A nodeattest.JoinToken is never presented twice.
	Attestor nodeattest.Attestor
	// NewWorkloadKey makes workload keys; default ECDSA P-256.
	NewWorkloadKey func() (crypto.Signer, error)
	// Serve, if set, serves the Workload API from the cache.
	Serve ServeFunc
	// Metrics is where the agent's series are registered; nil: nowhere.
	Metrics prometheus.Registerer
	// BatchSize bounds CSRs per signing call; default 100.
	BatchSize int
	// RetryMin and RetryMax bound the backoff towards the CA; defaults
	// 500ms and 30s.
	RetryMin, RetryMax time.Duration
	// CAPingAfter is how long a connection to the CA may be silent before
	// the agent pings the replica; a replica that does not answer within
	// as long again (at most 20 s) is left for the next. Default 30 s;
	// gRPC pings at most every 10 s.
	CAPingAfter time.Duration
	Clock       clock.Clock    // default the wall clock
	Rand        func() float64 // [0, 1); default math/rand/v2
	Logger      *slog.Logger
}

// Errors the operator must act on.
var (
	ErrNoAttestor = errors.New("the agent has no valid identity and no node attestor is configured: set join_token, x509pop or k8s_psat")
	ErrTokenUsed  = errors.New("the join token was already used and a join token works once: create a new one with `sigil token create` and restart the agent with --join-token (or put it in join_token)")
	ErrNoBundle   = errors.New("no trust bundle to verify the CA by: set trust_bundle_file to the CA's root certificates (PEM)")
)

// Agent is one node agent.
type Agent struct {
	cfg     Config
	caID    spiffeid.ID
	conn    *swapConn
	metrics *metrics
	cache   *cache.Cache
	denied  chan struct{}
	servers *servers
	// failover moves the agent between CA replicas; connMu serializes
	// replacing the connection (renewal, failover).
	failover *failover
	connMu   sync.Mutex

	revoked atomic.Pointer[revokedKeys]
	revMu   sync.Mutex // serializes addRevokedKeys

	// learned are the roots the CA sent (bootstraproots.go).
	learned atomic.Pointer[[]*x509.Certificate]
	learnMu sync.Mutex // serializes learnRoots

	// fallbackKey is the CA key last logged as verified by the bootstrap
	// roots (catrust.go).
	fallbackKey atomic.Pointer[string]

	mu sync.Mutex
	id *svidstore.Identity
	// problem, if set, is why the agent is not ready that the operator
	// must read (an expired agent SVID, a CA it cannot verify).
	problem string
	// resumed: the agent runs on its persisted identity (not a new
	// attestation), so its persisted workload SVIDs are its own.
	resumed bool
}

// New checks cfg and fills defaults. It starts nothing: call Run.
func New(cfg Config) (*Agent, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("agent: trust domain is required")
	}
	addrs := slices.DeleteFunc(append([]string{cfg.ServerAddress}, cfg.ServerAddresses...), func(s string) bool { return s == "" })
	if len(addrs) == 0 {
		return nil, errors.New("agent: server address is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: data dir is required")
	}
	if cfg.SVIDDir == "" {
		cfg.SVIDDir = cfg.DataDir
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Rand == nil {
		cfg.Rand = randv2.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	if cfg.CAPingAfter <= 0 {
		cfg.CAPingAfter = idleconn.ClientPingAfter
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, caID: sigilid.CA(cfg.TrustDomain), metrics: m, denied: make(chan struct{}, 1),
		servers: newServers(addrs, cfg.LookupHost), failover: newFailover()}
	a.conn = &swapConn{onDenied: a.poke, onFailed: a.failover.onFailed, onOK: a.failover.onOK}
	c, err := cache.New(cache.Config{
		TrustDomain:   cfg.TrustDomain,
		Client:        nodev1.NewNodeClient(a.conn),
		NewKey:        cfg.NewWorkloadKey,
		BatchSize:     cfg.BatchSize,
		RetryMin:      cfg.RetryMin,
		RetryMax:      cfg.RetryMax,
		Clock:         cfg.Clock,
		Rand:          cfg.Rand,
		Logger:        cfg.Logger,
		Metrics:       cache.NewMetrics(cfg.Metrics),
		OnBadKeys:     a.renewIfIssuerBad,
		OnRevokedKeys: a.addRevokedKeys,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.cache = c
	return a, nil
}

// Cache is the agent's SVID cache: the source the Workload API and SDS serve.
func (a *Agent) Cache() *cache.Cache { return a.cache }

// ID is the agent's SPIFFE ID once it has an identity.
func (a *Agent) ID() (spiffeid.ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.id == nil {
		return spiffeid.ID{}, false
	}
	return a.id.SVID.ID, true
}

// Ready reports whether the agent has a valid identity, has applied its
// first sync from the CA, and hands out every SVID it holds (none expired
// for want of renewal); the error says why not.
func (a *Agent) Ready(context.Context) error {
	a.mu.Lock()
	id, problem := a.id, a.problem
	a.mu.Unlock()
	switch {
	case problem != "":
		return errors.New(problem)
	case id == nil:
		return errors.New("not attested yet")
	case !a.cfg.Clock.Now().Before(id.NotAfter()):
		return fmt.Errorf("agent SVID expired at %s", id.NotAfter().UTC().Format(time.RFC3339))
	case !a.cache.Synced():
		return errors.New("no entries synced from the CA yet")
	}
	if expired, early := a.cache.Withheld(); expired+early > 0 {
		return fmt.Errorf("%d workload X509-SVIDs expired and %d not yet valid are withheld: the CA has not renewed them", expired, early)
	}
	return nil
}

// setProblem records why the agent is not ready ("" clears it).
func (a *Agent) setProblem(p string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.problem = p
}

// renewIfIssuerBad renews the agent's own SVID at once when the CA key that
// signed it is tainted or revoked: the CA's mTLS stops accepting it when the
// key is revoked, and a join-token agent could not attest again.
func (a *Agent) renewIfIssuerBad(bad map[string]bool) {
	id := a.current()
	if id == nil || id.SVID == nil || len(id.SVID.Certificates) < 2 {
		return
	}
	if sum := sha256.Sum256(id.SVID.Certificates[1].RawSubjectPublicKeyInfo); bad[hex.EncodeToString(sum[:])] {
		a.cfg.Logger.Warn("the CA key that signed the agent's SVID is tainted: renewing now")
		a.poke()
	}
}

func (a *Agent) poke() {
	select {
	case a.denied <- struct{}{}:
	default:
	}
}

// Run obtains the agent's identity (persisted, or by attesting), then
// renews it, syncs and mints workload SVIDs, and serves them until ctx
// ends. It returns early only on errors the operator must fix.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.loadRevokedKeys(); err != nil {
		return err
	}
	if err := a.loadLearnedRoots(); err != nil {
		return err
	}
	if err := a.bootstrap(ctx); err != nil {
		return err
	}
	a.restoreWorkloads()
	g, ctx := errgroup.WithContext(ctx)
	defer a.conn.close()
	g.Go(func() error { return a.cache.Run(ctx) })
	g.Go(func() error { return a.runRenewal(ctx) })
	g.Go(func() error { return a.runFailover(ctx) })
	g.Go(func() error { return a.runPersist(ctx) })
	if a.cfg.Serve != nil {
		g.Go(func() error { return a.cfg.Serve(ctx, a.cache) })
	}
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// current is the agent's identity now.
func (a *Agent) current() *svidstore.Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

// GetX509SVID implements x509svid.Source for the mTLS connection to the CA.
func (a *Agent) getX509SVID() (*x509svid.SVID, error) {
	id := a.current()
	if id == nil {
		return nil, errors.New("agent has no svid yet")
	}
	return id.SVID, nil
}

// roots are the authorities the CA's certificate must chain to: the bundle
// the cache synced, else the persisted one, else the bootstrap bundle. The
// bundle's authorities are the CA's signing keys, which expire and get
// revoked: the bootstrap roots serve only before the first sync or when
// every authority the agent holds has expired, and, for the CA's own
// certificate, when the held ones do not chain it (catrust.go).
func (a *Agent) roots() []*x509.Certificate {
	return a.withoutRevoked(a.heldRoots())
}

func (a *Agent) heldRoots() []*x509.Certificate {
	now := a.cfg.Clock.Now()
	if b := a.cache.Bundle(); b != nil {
		if live := unexpired(b.X509Authorities(), now); len(live) > 0 {
			return live
		}
	}
	if id := a.current(); id != nil {
		if live := unexpired(id.Bundle, now); len(live) > 0 {
			return live
		}
	}
	return a.bootstrapRoots()
}

func unexpired(certs []*x509.Certificate, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if now.Before(c.NotAfter) {
			out = append(out, c)
		}
	}
	return out
}

// install makes id current, persists it, and moves node API calls to a
// connection that presents it.
func (a *Agent) install(id *svidstore.Identity) error {
	if err := svidstore.Save(a.cfg.DataDir, id); err != nil {
		return err
	}
	a.mu.Lock()
	a.id = id
	a.mu.Unlock()
	return a.reconnectSame(context.Background())
}

// reconnectSame replaces the connection by a new one to the same replica
// (or the current candidate when there is none): one that presents the
// agent's current SVID.
func (a *Agent) reconnectSame(ctx context.Context) error {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	addr := a.servers.current(ctx)
	if c := a.conn.current(); c != nil {
		addr = c.addr
	}
	cc, err := a.dial(addr, true)
	if err != nil {
		return err
	}
	a.conn.swap(cc, addr)
	return nil
}

// checkAgentSVID turns the CA's answer into an identity over key, checking
// that it is an agent ID of our trust domain for our key.
func (a *Agent) checkAgentSVID(res *nodev1.AgentSVID, key crypto.Signer) (*x509svid.SVID, []*x509.Certificate, error) {
	if res == nil || len(res.GetCertChain()) == 0 {
		return nil, nil, errors.New("the CA returned no agent svid")
	}
	var raw []byte
	for _, der := range res.GetCertChain() {
		raw = append(raw, der...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	svid, err := x509svid.ParseRaw(raw, keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("agent svid from the CA: %w", err)
	}
	if !svid.ID.MemberOf(a.cfg.TrustDomain) || !sigilid.IsAgent(svid.ID) {
		return nil, nil, fmt.Errorf("agent svid from the CA is for %s, not an agent of %s", svid.ID, a.cfg.TrustDomain)
	}
	if res.GetSpiffeId() != "" && res.GetSpiffeId() != svid.ID.String() {
		return nil, nil, fmt.Errorf("the CA says the agent is %s but its svid is for %s", res.GetSpiffeId(), svid.ID)
	}
	var roots []*x509.Certificate
	if b := res.GetBundle(); b != nil {
		sb, err := bundleconv.FromProto(b)
		if err != nil {
			return nil, nil, fmt.Errorf("bundle from the CA: %w", err)
		}
		if sb.TrustDomain() != a.cfg.TrustDomain {
			return nil, nil, fmt.Errorf("the CA sent the bundle of %s, want %s", sb.TrustDomain(), a.cfg.TrustDomain)
		}
		roots = sb.X509Authorities()
	}
	if len(roots) == 0 {
		roots = a.roots()
	}
	_, chains, err := x509svid.Verify(svid.Certificates, bundleSet(a.cfg.TrustDomain, roots))
	if err != nil {
		return nil, nil, fmt.Errorf("agent svid from the CA does not chain to the bundle: %w", err)
	}
	if err := a.throughRevoked(chains); err != nil {
		return nil, nil, fmt.Errorf("agent svid from the CA: %w", err)
	}
	return svid, roots, nil
}

// newAgentKey makes the key of a new agent SVID and a CSR for it.
func newAgentKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent csr: %w", err)
	}
	return key, csr, nil
}
