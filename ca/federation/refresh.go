package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/bundleconv"
	"github.com/sigilhq/sigil/internal/clock"
)

// Relationship is one federated trust domain and where its bundle lives.
type Relationship struct {
	TrustDomain spiffeid.TrustDomain
	URL         string // https://... bundle endpoint
	Profile     string // ProfileSPIFFE or ProfileWeb
	// EndpointID is the SPIFFE ID the endpoint's certificate must carry
	// (ProfileSPIFFE); it chains to the peer's last good bundle.
	EndpointID spiffeid.ID
	// WebRoots verify the endpoint (ProfileWeb); nil means the system roots.
	WebRoots *x509.CertPool
	Source   string // "config" or "api"
}

// Check validates r against our own trust domain.
func (r Relationship) Check(own spiffeid.TrustDomain) error {
	if r.TrustDomain.IsZero() {
		return errors.New("trust domain is required")
	}
	if r.TrustDomain == own {
		return fmt.Errorf("trust domain %s is our own", r.TrustDomain)
	}
	u, err := url.Parse(r.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("bundle endpoint url %q: want https://host[:port]/path", r.URL)
	}
	switch r.Profile {
	case ProfileSPIFFE:
		if r.EndpointID.IsZero() {
			return errors.New("https_spiffe needs the endpoint SPIFFE ID")
		}
	case ProfileWeb:
		if !r.EndpointID.IsZero() {
			return errors.New("endpoint SPIFFE ID is only for https_spiffe")
		}
	default:
		return fmt.Errorf("profile %q: want https_spiffe or https_web", r.Profile)
	}
	return nil
}

// Status is what is known about one relationship's refreshes.
type Status struct {
	Relationship
	LastAttempt         time.Time
	LastSuccess         time.Time
	LastError           string // of the last attempt; "" after a success
	ConsecutiveFailures int
	Sequence            uint64    // of the bundle last fetched
	NextRefresh         time.Time // when the next fetch is due
}

// BundleStore is where federated bundles are kept.
type BundleStore interface {
	GetBundle(ctx context.Context, trustDomain string) (store.Bundle, error)
	SetBundle(ctx context.Context, actor string, b store.Bundle) error
}

// RefresherConfig configures the refresher.
type RefresherConfig struct {
	TrustDomain spiffeid.TrustDomain // ours
	Store       BundleStore
	// Relationships lists the relationships to keep fresh; it is called on
	// every tick, so created and deleted ones are picked up.
	Relationships func(context.Context) ([]Relationship, error)
	// MinRefresh and MaxRefresh bound the peer's refresh hint (defaults 30s
	// and 1h); a failed fetch is retried after MinRefresh. DefaultRefresh
	// applies when the peer gives no hint (default 5m).
	MinRefresh, MaxRefresh, DefaultRefresh time.Duration
	Tick                                   time.Duration // how often due refreshes are looked for (default 1s)
	Timeout                                time.Duration // per fetch (default 10s)
	Clock                                  clock.Clock
	Logger                                 *slog.Logger
	Metrics                                prometheus.Registerer
}

// Refresher fetches each federated trust domain's bundle from its
// endpoint when the peer's refresh hint says so. A failed fetch keeps the
// last good bundle and shows in Statuses and the metrics.
type Refresher struct {
	cfg      RefresherConfig
	fetches  *prometheus.CounterVec
	mu       sync.Mutex
	statuses map[spiffeid.TrustDomain]*Status
}

// actor is who the store's audit trail names for refreshed bundles.
const actor = "federation"

// NewRefresher fills defaults and registers the metrics.
func NewRefresher(cfg RefresherConfig) (*Refresher, error) {
	if cfg.TrustDomain.IsZero() || cfg.Store == nil || cfg.Relationships == nil {
		return nil, errors.New("federation refresher: trust domain, store and relationships are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MinRefresh, 30*time.Second)
	def(&cfg.MaxRefresh, time.Hour)
	def(&cfg.DefaultRefresh, 5*time.Minute)
	def(&cfg.Tick, time.Second)
	def(&cfg.Timeout, 10*time.Second)
	if cfg.MaxRefresh < cfg.MinRefresh {
		return nil, errors.New("federation refresher: max refresh is below min refresh")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Refresher{cfg: cfg, statuses: map[spiffeid.TrustDomain]*Status{}}
	r.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_federation_bundle_fetches_total",
		Help: "Fetches of federated trust domains' bundles, by trust domain and result (ok, error).",
	}, []string{"trust_domain", "result"})
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(r.fetches); err != nil {
			return nil, fmt.Errorf("federation refresher: metrics: %w", err)
		}
	}
	return r, nil
}

// Statuses returns a copy of every relationship's status, by trust domain.
func (r *Refresher) Statuses() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.statuses))
	for _, s := range r.statuses {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Status) int { return compareStrings(a.TrustDomain.Name(), b.TrustDomain.Name()) })
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Run refreshes due relationships until ctx ends.
func (r *Refresher) Run(ctx context.Context) error {
	for {
		r.RefreshDue(ctx)
		if !clock.Sleep(ctx, r.cfg.Clock, r.cfg.Tick) {
			return nil
		}
	}
}

// RefreshDue fetches every relationship whose refresh is due, one at a
// time, and forgets the status of relationships that are gone.
func (r *Refresher) RefreshDue(ctx context.Context) {
	rels, err := r.cfg.Relationships(ctx)
	if err != nil {
		r.cfg.Logger.Warn("federation: list relationships", "error", err)
		return
	}
	now := r.cfg.Clock.Now()
	var due []Relationship
	r.mu.Lock()
	seen := map[spiffeid.TrustDomain]bool{}
	for _, rel := range rels {
		seen[rel.TrustDomain] = true
		s, ok := r.statuses[rel.TrustDomain]
		if !ok || !sameEndpoint(s.Relationship, rel) {
			s = &Status{Relationship: rel}
			r.statuses[rel.TrustDomain] = s
		}
		if !now.Before(s.NextRefresh) {
			due = append(due, rel)
		}
	}
	for td := range r.statuses {
		if !seen[td] {
			delete(r.statuses, td)
		}
	}
	r.mu.Unlock()
	for _, rel := range due {
		if ctx.Err() != nil {
			return
		}
		r.refresh(ctx, rel)
	}
}

func sameEndpoint(a, b Relationship) bool {
	return a.URL == b.URL && a.Profile == b.Profile && a.EndpointID == b.EndpointID && a.WebRoots.Equal(b.WebRoots)
}

// refresh fetches one relationship's bundle and records the outcome.
func (r *Refresher) refresh(ctx context.Context, rel Relationship) {
	start := r.cfg.Clock.Now()
	b, err := r.Fetch(ctx, rel)
	if err == nil {
		err = r.save(ctx, rel.TrustDomain, b)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.statuses[rel.TrustDomain]
	if !ok {
		return // deleted meanwhile
	}
	s.LastAttempt = start
	if err != nil {
		s.LastError = err.Error()
		s.ConsecutiveFailures++
		s.NextRefresh = start.Add(r.cfg.MinRefresh)
		r.fetches.WithLabelValues(rel.TrustDomain.Name(), "error").Inc()
		r.cfg.Logger.Warn("federation: bundle refresh failed; keeping the last good bundle", "trust_domain", rel.TrustDomain.Name(), "failures", s.ConsecutiveFailures, "error", err)
		return
	}
	s.LastSuccess, s.LastError, s.ConsecutiveFailures = start, "", 0
	s.Sequence, _ = b.SequenceNumber()
	hint, _ := b.RefreshHint()
	s.NextRefresh = start.Add(r.interval(hint))
	r.fetches.WithLabelValues(rel.TrustDomain.Name(), "ok").Inc()
	r.cfg.Logger.Debug("federation: bundle refreshed", "trust_domain", rel.TrustDomain.Name(), "sequence", s.Sequence, "next", s.NextRefresh)
}

// interval is the peer's hint bounded by MinRefresh and MaxRefresh.
func (r *Refresher) interval(hint time.Duration) time.Duration {
	if hint <= 0 {
		hint = r.cfg.DefaultRefresh
	}
	return min(max(hint, r.cfg.MinRefresh), r.cfg.MaxRefresh)
}

// save stores b unless the stored bundle has the same content.
func (r *Refresher) save(ctx context.Context, td spiffeid.TrustDomain, b *spiffebundle.Bundle) error {
	want, err := ToStore(b)
	if err != nil {
		return err
	}
	have, err := r.cfg.Store.GetBundle(ctx, td.Name())
	if err == nil && sameBundle(have, want) {
		return nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read stored bundle: %w", err)
	}
	if err := r.cfg.Store.SetBundle(ctx, actor, want); err != nil {
		return fmt.Errorf("store bundle: %w", err)
	}
	r.cfg.Logger.Info("federation: bundle updated", "trust_domain", td.Name(), "sequence", want.Sequence, "x509_authorities", len(want.X509Authorities), "jwt_authorities", len(want.JWTAuthorities))
	return nil
}

func sameBundle(a, b store.Bundle) bool {
	if a.Sequence != b.Sequence || a.RefreshHint != b.RefreshHint || len(a.X509Authorities) != len(b.X509Authorities) || len(a.JWTAuthorities) != len(b.JWTAuthorities) {
		return false
	}
	for i := range a.X509Authorities {
		if !bytes.Equal(a.X509Authorities[i], b.X509Authorities[i]) {
			return false
		}
	}
	for i := range a.JWTAuthorities {
		if a.JWTAuthorities[i].KeyID != b.JWTAuthorities[i].KeyID || !bytes.Equal(a.JWTAuthorities[i].PublicKey, b.JWTAuthorities[i].PublicKey) {
			return false
		}
	}
	return true
}

// Fetch gets rel's bundle from its endpoint and parses it strictly. For
// https_spiffe the endpoint must present an X509-SVID with rel.EndpointID
// that chains to the peer's last good bundle in the store.
func (r *Refresher) Fetch(ctx context.Context, rel Relationship) (*spiffebundle.Bundle, error) {
	var tc *tls.Config
	switch rel.Profile {
	case ProfileSPIFFE:
		have, err := r.cfg.Store.GetBundle(ctx, rel.TrustDomain.Name())
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("https_spiffe needs an initial bundle of %s: set one (sigil bundle set or the relationship's bundle)", rel.TrustDomain)
		}
		if err != nil {
			return nil, fmt.Errorf("read stored bundle: %w", err)
		}
		known, err := bundleconv.FromProto(apiconv.BundleToProto(have))
		if err != nil {
			return nil, fmt.Errorf("stored bundle: %w", err)
		}
		tc = tlsconfig.TLSClientConfig(known, tlsconfig.AuthorizeID(rel.EndpointID))
	case ProfileWeb:
		tc = &tls.Config{RootCAs: rel.WebRoots, MinVersion: tls.VersionTLS12}
	default:
		return nil, fmt.Errorf("profile %q: want https_spiffe or https_web", rel.Profile)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true, MaxResponseHeaderBytes: 16 << 10},
		// A redirect could lead to an endpoint the relationship never named.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rel.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle of %s: %w", rel.TrustDomain, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle of %s: %w", rel.TrustDomain, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch bundle of %s: http status %s", rel.TrustDomain, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch bundle of %s: %w", rel.TrustDomain, err)
	}
	b, err := ParseBundle(rel.TrustDomain, data)
	if err != nil {
		return nil, fmt.Errorf("bundle of %s: %w", rel.TrustDomain, err)
	}
	return b, nil
}

// ToStore converts a parsed bundle to the store's form, JWT keys sorted by
// key ID.
func ToStore(b *spiffebundle.Bundle) (store.Bundle, error) {
	pb, err := bundleconv.ToProto(b)
	if err != nil {
		return store.Bundle{}, err
	}
	out := store.Bundle{TrustDomain: pb.GetTrustDomain(), X509Authorities: pb.GetX509Authorities(), Sequence: pb.GetSequence()}
	if h := pb.GetRefreshHint(); h != nil {
		out.RefreshHint = h.AsDuration()
	}
	for _, a := range pb.GetJwtAuthorities() {
		out.JWTAuthorities = append(out.JWTAuthorities, store.JWTAuthority{KeyID: a.GetKeyId(), PublicKey: a.GetPublicKey()})
	}
	return out, nil
}

// WebRoots parses PEM CA certificates for an https_web relationship; none
// (nil) means the system roots.
func WebRoots(pemData []byte) (*x509.CertPool, error) {
	if len(pemData) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, errors.New("no PEM certificate in web roots")
	}
	return pool, nil
}

// FromStore converts a stored relationship.
func FromStore(f store.FederationRelationship, source string) (Relationship, error) {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return Relationship{}, fmt.Errorf("federation %q: %w", f.TrustDomain, err)
	}
	rel := Relationship{TrustDomain: td, URL: f.BundleEndpointURL, Profile: f.Profile, Source: source}
	if f.EndpointSPIFFEID != "" {
		if rel.EndpointID, err = spiffeid.FromString(f.EndpointSPIFFEID); err != nil {
			return Relationship{}, fmt.Errorf("federation %s: endpoint spiffe id: %w", td, err)
		}
	}
	if rel.WebRoots, err = WebRoots(f.WebRootsPEM); err != nil {
		return Relationship{}, fmt.Errorf("federation %s: %w", td, err)
	}
	return rel, nil
}
