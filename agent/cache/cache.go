package cache

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	randv2 "math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"
	"unique"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/clock"
)

// Client is what the cache needs from the CA's node API.
type Client interface {
	Sync(ctx context.Context, in *nodev1.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[nodev1.SyncResponse], error)
	SignX509SVIDs(ctx context.Context, in *nodev1.SignX509SVIDsRequest, opts ...grpc.CallOption) (*nodev1.SignX509SVIDsResponse, error)
	MintJWTSVID(ctx context.Context, in *nodev1.MintJWTSVIDRequest, opts ...grpc.CallOption) (*nodev1.MintJWTSVIDResponse, error)
}

// Config configures a Cache.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Client      Client
	// Bundle is our trust domain's bundle as known before the first sync
	// (from the agent's persisted identity); may be nil.
	Bundle *spiffebundle.Bundle
	// NewKey makes a workload key; default ECDSA P-256.
	NewKey func() (crypto.Signer, error)
	// BatchSize bounds the CSRs in one SignX509SVIDs call; default 100.
	BatchSize int
	// RetryMin and RetryMax bound the backoff after a failed call to the
	// CA; defaults 500ms and 30s.
	RetryMin, RetryMax time.Duration
	Clock              clock.Clock    // default the wall clock
	Rand               func() float64 // [0, 1); default math/rand/v2
	Logger             *slog.Logger
	Metrics            *Metrics
	// OnBadKeys, when set, is called (outside the cache's lock, and must
	// not block) after a sync delivered the tainted and revoked CA key IDs,
	// so the agent can renew its own SVID when its issuer is among them.
	OnBadKeys func(bad map[string]bool)
	// ReleaseMemory returns freed memory to the OS; default
	// debug.FreeOSMemory. The cache calls it (from its minting goroutine,
	// holding no lock) after a large sync or minting pass: once at least
	// ReleaseAfter entries or SVIDs changed since the last call (default
	// 1,000) and then none for ReleaseSettle (default 3s), at most once
	// per ReleaseEvery (default 10s). A negative ReleaseSettle waits for
	// no pause.
	ReleaseMemory func()
	ReleaseAfter  int
	ReleaseEvery  time.Duration
	ReleaseSettle time.Duration
	// OnRevokedKeys, when set, is called likewise with the revoked CA key
	// IDs of a sync that delivered any, so the agent can persist them.
	OnRevokedKeys func(revoked []string)
}

// Cache holds the agent's entries and their SVIDs.
type Cache struct {
	cfg  Config
	wake chan struct{} // buffer 1: something needs minting
	// expWake (buffer 1): an SVID changed, look at validity again.
	expWake chan struct{}
	// redial (buffer 1): the agent moved to another CA replica; a sync
	// stream waiting out its backoff reopens at once.
	redial chan struct{}

	mu       sync.Mutex
	entries  map[string]*entry
	bundles  map[spiffeid.TrustDomain]*spiffebundle.Bundle
	bad      map[string]bool // tainted or revoked CA key IDs
	crls     [][]byte        // DER CRLs of our trust domain, as the CA last sent them
	revision int64
	synced   bool
	version  uint64 // bumped by every change subscribers are told about
	subs     map[*subscription]struct{}
	nsvids   int                          // entries holding an SVID
	interned map[string]*x509.Certificate // CA certificates by DER
	// churn counts entries and SVIDs changed since the last ReleaseMemory,
	// the first of them at churnFirst, the last at churnLast.
	churn                 int
	churnFirst, churnLast time.Time

	jwtMu sync.Mutex
	jwts  map[string]cachedJWT
}

type entry struct {
	Entry       // never modified: a changed entry is a new *entry
	svid  *held // nil until minted
	// caKey is the key ID of svid's issuer, interned: the same for every
	// SVID of that issuer, so one copy is held rather than one per SVID.
	caKey    unique.Handle[string]
	jitter   float64 // drawn once per SVID
	rotateAt time.Time
	stale    bool // the entry changed in a way its SVID must follow
	gen      uint64
	retryAt  time.Time
	failures int

	// validFrom and validUntil bound when svid may be handed out; usable
	// is whether subscribers were last told it is (see runExpiry).
	validFrom, validUntil time.Time
	usable                bool
}

// caKeyID is the key ID of the SVID's issuer, "" before the first SVID.
func (e *entry) caKeyID() string {
	if e.caKey == (unique.Handle[string]{}) {
		return ""
	}
	return e.caKey.Value()
}

// New checks cfg and fills defaults. It starts nothing: call Run.
func New(cfg Config) (*Cache, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("cache: trust domain is required")
	}
	if cfg.Client == nil {
		return nil, errors.New("cache: node API client is required")
	}
	if cfg.NewKey == nil {
		cfg.NewKey = func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
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
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.ReleaseMemory == nil {
		cfg.ReleaseMemory = debug.FreeOSMemory
	}
	if cfg.ReleaseAfter <= 0 {
		cfg.ReleaseAfter = DefaultReleaseAfter
	}
	if cfg.ReleaseEvery <= 0 {
		cfg.ReleaseEvery = DefaultReleaseEvery
	}
	if cfg.ReleaseSettle < 0 {
		cfg.ReleaseSettle = 0
	} else if cfg.ReleaseSettle == 0 {
		cfg.ReleaseSettle = DefaultReleaseSettle
	}
	c := &Cache{
		cfg:      cfg,
		wake:     make(chan struct{}, 1),
		expWake:  make(chan struct{}, 1),
		redial:   make(chan struct{}, 1),
		entries:  map[string]*entry{},
		bundles:  map[spiffeid.TrustDomain]*spiffebundle.Bundle{},
		bad:      map[string]bool{},
		subs:     map[*subscription]struct{}{},
		interned: map[string]*x509.Certificate{},
		jwts:     map[string]cachedJWT{},
	}
	if cfg.Bundle != nil {
		c.bundles[cfg.Bundle.TrustDomain()] = cfg.Bundle
	}
	return c, nil
}

// Run syncs entries from the CA, keeps their SVIDs minted and withholds
// each SVID outside its validity until ctx ends. It recovers by itself
// when the CA is unreachable and comes back.
func (c *Cache) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); c.runSync(ctx) }()
	go func() { defer wg.Done(); c.runMint(ctx) }()
	go func() { defer wg.Done(); c.runExpiry(ctx) }()
	wg.Wait()
	return nil
}

// Synced reports whether the first sync from the CA has been applied.
func (c *Cache) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// Revision is the last store revision applied.
func (c *Cache) Revision() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revision
}

// Resync makes the next sync stream start from revision 0 (the full set):
// after the agent attested again, perhaps as another agent ID, what it was
// authorized for before says nothing.
func (c *Cache) Resync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.revision = 0
}

// Bundle is our trust domain's current bundle, or nil.
func (c *Cache) Bundle() *spiffebundle.Bundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundles[c.cfg.TrustDomain]
}

// Stats counts entries and the SVIDs held for them.
func (c *Cache) Stats() (entries, svids int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.nsvids
}

// Reconnect says the node API client now talks to another CA replica: a
// sync stream or minting waiting out a backoff after failures tries again
// at once.
func (c *Cache) Reconnect() {
	select {
	case c.redial <- struct{}{}:
	default:
	}
	c.poke()
}

func (c *Cache) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func sortedIDs(m map[string]*entry) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
