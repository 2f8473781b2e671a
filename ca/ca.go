package ca

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// Defaults from DESIGN.md.
const (
	DefaultCATTL       = 24 * time.Hour
	DefaultX509SVIDTTL = time.Hour
	DefaultJWTSVIDTTL  = 5 * time.Minute
	DefaultRefreshHint = 5 * time.Minute
	DefaultInstanceID  = "primary"
	// backdate allows for clocks that run a little behind the CA's.
	backdate = 10 * time.Second
)

// KeyManager makes and finds the CA's private keys.
type KeyManager interface {
	GenerateKey(ctx context.Context, name string, t keys.Type) (crypto.Signer, error)
	Signer(ctx context.Context, name string) (crypto.Signer, error)
}

// Upstream signs the CA's signing certificates and names the bundle's roots.
type Upstream interface {
	SignCA(ctx context.Context, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error)
	Roots(ctx context.Context) ([]*x509.Certificate, error)
}

// Store is the part of the datastore the CA uses.
type Store interface {
	store.Journals
	store.Bundles
	store.Revocations
	store.CRLs
	AppendAudit(ctx context.Context, ev store.AuditEvent) (store.AuditEvent, error)
}

// Config configures a CA. TrustDomain, Store, Keys and Upstream are required.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	InstanceID  string // names this replica's journal; default "primary"
	Store       Store
	Keys        KeyManager
	Upstream    Upstream
	KeyType     keys.Type     // default ec-p256
	CATTL       time.Duration // signing key and certificate life; default 24h
	X509SVIDTTL time.Duration // default 1h
	JWTSVIDTTL  time.Duration // default 5m
	JWTIssuer   string        // optional "iss" claim
	RefreshHint time.Duration // bundle refresh hint; default 5m
	Now         func() time.Time
	Logger      *slog.Logger
	Metrics     prometheus.Registerer // where the CA's series are registered; nil: nowhere
	// The re-key after a leaf revocation (rekey.go): how long the next key
	// is published before it signs (default 3s), and how long agents get
	// to re-mint before the old keys are revoked: at least RekeyRemintMin
	// (2s), then until no X.509-SVID was signed for RekeyRemintQuiet (1s),
	// at most RekeyRemintMax (30s).
	RekeyPublishWait time.Duration
	RekeyRemintMin   time.Duration
	RekeyRemintQuiet time.Duration
	RekeyRemintMax   time.Duration
}

// CA issues SVIDs for one trust domain.
type CA struct {
	cfg     Config
	id      spiffeid.ID // spiffe://TD/sigil/ca
	metrics *metrics

	mu  sync.Mutex // serializes journal changes; never held while signing
	cur atomic.Pointer[state]

	server atomic.Pointer[x509svid.SVID] // the CA's own TLS identity
	// authorities are the X.509 authorities of the last published bundle.
	authorities atomic.Pointer[[]*x509.Certificate]
	kidTag      string // prefix of every JWT kid this instance makes

	revMu   sync.Mutex // serializes refreshRevocations
	revoked atomic.Pointer[revocations]

	lastSign  atomic.Int64  // UnixNano of the last X.509-SVID signed
	started   time.Time     // when Init ran: a resumed re-key's re-mint wait counts from it
	rekeyKick chan struct{} // wakes Run to advance the re-key
}

// ErrNotReady is returned by signing calls before Init succeeded.
var ErrNotReady = errors.New("ca has no active key yet")

// ErrStateMismatch is wrapped by Init when the store and the key manager or
// upstream hold different CAs' state: an emptied, new or foreign database
// beside keys that have signed before. The CA then refuses to start rather
// than make new keys over the old ones.
var ErrStateMismatch = errors.New("ca state mismatch")

// New checks cfg and fills defaults. It does no I/O: call Init.
func New(cfg Config) (*CA, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if cfg.Store == nil || cfg.Keys == nil || cfg.Upstream == nil {
		return nil, errors.New("ca: store, key manager and upstream are required")
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = DefaultInstanceID
	}
	if cfg.KeyType == "" {
		cfg.KeyType = keys.ECP256
	}
	if cfg.CATTL == 0 {
		cfg.CATTL = DefaultCATTL
	}
	if cfg.X509SVIDTTL == 0 {
		cfg.X509SVIDTTL = DefaultX509SVIDTTL
	}
	if cfg.JWTSVIDTTL == 0 {
		cfg.JWTSVIDTTL = DefaultJWTSVIDTTL
	}
	if cfg.RefreshHint == 0 {
		cfg.RefreshHint = DefaultRefreshHint
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.RekeyPublishWait, DefaultRekeyPublishWait}, {&cfg.RekeyRemintMin, DefaultRekeyRemintMin},
		{&cfg.RekeyRemintQuiet, DefaultRekeyRemintQuiet}, {&cfg.RekeyRemintMax, DefaultRekeyRemintMax}} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return nil, errors.New("ca: re-key waits must not be negative")
		}
	}
	if cfg.RekeyRemintMax < cfg.RekeyRemintMin {
		return nil, errors.New("ca: rekey_remint_max is shorter than rekey_remint_min")
	}
	if cfg.CATTL < time.Minute || cfg.X509SVIDTTL < time.Second || cfg.JWTSVIDTTL < time.Second {
		return nil, errors.New("ca: ttls too short (ca_ttl ≥ 1m, svid ttls ≥ 1s)")
	}
	if cfg.X509SVIDTTL >= cfg.CATTL || cfg.JWTSVIDTTL >= cfg.CATTL {
		return nil, fmt.Errorf("ca: svid ttls must be shorter than ca_ttl (%s)", cfg.CATTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sum := sha256.Sum256([]byte(cfg.InstanceID))
	c := &CA{cfg: cfg, id: sigilid.CA(cfg.TrustDomain), kidTag: base64.RawURLEncoding.EncodeToString(sum[:])[:6] + ".",
		rekeyKick: make(chan struct{}, 1)}
	var err error
	if c.metrics, err = newMetrics(cfg.Metrics, c.activeKeyExpiry); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return c, nil
}

// ID is the CA's own SPIFFE ID.
func (c *CA) ID() spiffeid.ID { return c.id }

// TrustDomain is the trust domain the CA signs for.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.cfg.TrustDomain }

// Init loads the journal (or starts one), brings keys up to date for now,
// publishes the bundle and mints the CA's own TLS identity.
func (c *CA) Init(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.started = c.cfg.Now()
	raw, err := c.cfg.Store.LoadJournal(ctx, c.cfg.InstanceID)
	var doc journalDoc
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := c.checkFirstStart(ctx); err != nil {
			return err
		}
		doc = journalDoc{Version: journalVersion, NextSeq: 1}
	case err != nil:
		return fmt.Errorf("load ca journal: %w", err)
	default:
		if doc, err = decodeJournal(raw); err != nil {
			return err
		}
		if err := c.checkRoots(ctx, doc); err != nil {
			return err
		}
	}
	if err := c.checkPeerRoots(ctx, doc); err != nil {
		return err
	}
	rootsChanged, err := c.reconcileRoots(ctx, &doc)
	if err != nil {
		return err
	}
	st, err := c.load(ctx, doc)
	if err != nil {
		return err
	}
	if rootsChanged {
		if err := c.commit(ctx, doc); err != nil {
			return err
		}
		st = c.cur.Load()
	}
	c.cur.Store(st)
	if err := c.rotateLocked(ctx); err != nil {
		return err
	}
	if err := c.publishBundle(ctx); err != nil {
		return err
	}
	if err := c.refreshRevocations(ctx); err != nil {
		return err
	}
	return c.refreshServerSVID(ctx, true)
}

// load turns a journal into a signing state, loading every key.
func (c *CA) load(ctx context.Context, doc journalDoc) (*state, error) {
	st := &state{doc: doc}
	for _, rec := range doc.X509 {
		slot, err := c.loadX509(ctx, rec)
		if err != nil {
			return nil, err
		}
		st.x509 = append(st.x509, slot)
		if rec.State == Active {
			st.activeX509 = slot
		}
	}
	for _, rec := range doc.JWT {
		slot, err := c.loadJWT(ctx, rec)
		if err != nil {
			return nil, err
		}
		st.jwt = append(st.jwt, slot)
		if rec.State == Active {
			st.activeJWT = slot
		}
	}
	return st, nil
}

func (c *CA) loadX509(ctx context.Context, rec x509Record) (*x509Slot, error) {
	if len(rec.Chain) == 0 {
		return nil, fmt.Errorf("ca journal: x509 key %s has no certificate", rec.ID)
	}
	chain := make([]*x509.Certificate, len(rec.Chain))
	for i, der := range rec.Chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("ca journal: x509 key %s: parse certificate: %w", rec.ID, err)
		}
		chain[i] = cert
	}
	signer, err := c.signerFor(ctx, rec.KeyName)
	if err != nil {
		return nil, fmt.Errorf("ca journal: x509 key %s: %w", rec.ID, err)
	}
	if !publicKeysEqual(signer.Public(), chain[0].PublicKey) {
		return nil, fmt.Errorf("%w: ca journal: x509 key %s: key %q in the key manager is not the key of its certificate: %s", ErrStateMismatch, rec.ID, rec.KeyName, mismatchHint)
	}
	return &x509Slot{rec: rec, cert: chain[0], chain: chain, signer: signer, self: newSelfBundle(c.cfg.TrustDomain, chain[0])}, nil
}

func (c *CA) loadJWT(ctx context.Context, rec jwtRecord) (*jwtSlot, error) {
	pub, err := x509.ParsePKIXPublicKey(rec.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca journal: jwt key %s: %w", rec.ID, err)
	}
	signer, err := c.signerFor(ctx, rec.KeyName)
	if err != nil {
		return nil, fmt.Errorf("ca journal: jwt key %s: %w", rec.ID, err)
	}
	if !publicKeysEqual(signer.Public(), pub) {
		return nil, fmt.Errorf("%w: ca journal: jwt key %s: key %q in the key manager is not the key the journal names: %s", ErrStateMismatch, rec.ID, rec.KeyName, mismatchHint)
	}
	return &jwtSlot{rec: rec, public: pub, signer: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// commit persists doc, loads it and swaps it in. Callers hold c.mu.
func (c *CA) commit(ctx context.Context, doc journalDoc) error {
	st, err := c.load(ctx, doc)
	if err != nil {
		return err
	}
	raw, err := doc.encode()
	if err != nil {
		return err
	}
	if err := c.cfg.Store.SaveJournal(ctx, c.cfg.InstanceID, raw); err != nil {
		return fmt.Errorf("save ca journal: %w", err)
	}
	c.cur.Store(st)
	return nil
}

// Run rotates keys on schedule until ctx ends. Init must have succeeded.
func (c *CA) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	rev := time.NewTicker(RevocationPoll)
	defer rev.Stop()
	rk := time.NewTicker(rekeyTick)
	defer rk.Stop()
	var rekeyErr string
	if st := c.cur.Load(); st != nil && st.doc.Rekey != nil {
		c.cfg.Logger.Warn("resuming the re-key in progress", "new_key", st.doc.Rekey.NewKey, "started", st.doc.Rekey.Started)
	}
	var rootErr string
	if st := c.cur.Load(); st != nil && rootPublishing(st.doc) {
		c.cfg.Logger.Warn("resuming the root rotation in progress")
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Rotate(ctx); err != nil {
				c.cfg.Logger.Error("ca rotation failed", "error", err)
			}
			if _, err := c.cfg.Store.PruneRevokedSVIDs(ctx, c.cfg.Now()); err != nil {
				c.cfg.Logger.Error("prune revoked svids", "error", err)
			}
		case <-rev.C:
			if err := c.refreshRevocations(ctx); err != nil {
				c.cfg.Logger.Error("refresh revocations", "error", err)
			}
		case <-rk.C:
		case <-c.rekeyKick:
		}
		// Logged once per distinct failure: the step retries every tick.
		switch err := c.rekeyStep(ctx); {
		case err != nil && ctx.Err() == nil && err.Error() != rekeyErr:
			rekeyErr = err.Error()
			c.cfg.Logger.Error("re-key step failed; retrying", "error", err)
		case err == nil && rekeyErr != "":
			rekeyErr = ""
			c.cfg.Logger.Info("re-key step succeeds again")
		}
		switch err := c.rootStep(ctx); {
		case err != nil && ctx.Err() == nil && err.Error() != rootErr:
			rootErr = err.Error()
			c.cfg.Logger.Error("root rotation step failed; retrying", "error", err)
		case err == nil && rootErr != "":
			rootErr = ""
			c.cfg.Logger.Info("root rotation step succeeds again")
		}
	}
}

func (c *CA) audit(ctx context.Context, action, target, details string) {
	ev := store.AuditEvent{Time: c.cfg.Now(), Actor: c.id.String(), Action: action, Target: target, Details: details}
	if _, err := c.cfg.Store.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		c.cfg.Logger.Error("write audit event", "action", action, "error", err)
	}
}
