package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/selector"
)

// Default resource names.
const (
	DefaultSVIDName    = "default"
	DefaultRootCAName  = "ROOTCA"
	DefaultAllBundles  = "ALL"
	MaxResourceNames   = 1024 // per stream or fetch; more is InvalidArgument
	maxResourceNameLen = 2048
	// DefaultPendingTimeout is how long a stream may serve nothing of what
	// it asks for before it is closed.
	DefaultPendingTimeout = 5 * time.Minute
)

// Config configures a Server. Source and Attestor are required.
type Config struct {
	Source   Source
	Attestor Attestor
	// DefaultSVIDName serves the caller's SVID with the smallest entry ID
	// (default "default").
	DefaultSVIDName string
	// RootCAName serves the caller's own trust domain bundle as a
	// validation context (default "ROOTCA").
	RootCAName string
	// AllBundlesName serves a validation context whose SPIFFE certificate
	// validator holds every trust domain's bundle (default "ALL").
	AllBundlesName string
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
	// Metrics, if set, registers the server's collectors.
	Metrics prometheus.Registerer
	// PendingTimeout closes, with NotFound, a stream that has served none
	// of the names it asks for (or asked for none) for this long, so that
	// pending streams cannot pile up (default DefaultPendingTimeout). The
	// client may open a new one.
	PendingTimeout time.Duration
	// Clock times PendingTimeout (default: the wall clock).
	Clock clock.Clock
}

// Server implements envoy.service.secret.v3.SecretDiscoveryService.
//
// Each stream attests its caller once, subscribes to the Source with the
// caller's selectors and pushes every change (rotation, bundle change,
// identity removed) as soon as the Source reports it. A caller that cannot
// be attested gets PermissionDenied. A caller that is attested but holds no
// identity (yet) is not refused: its request for "default" or a SPIFFE ID
// stays pending, as Envoy expects of a secret that is not ready, and is
// answered once the SVID exists, so Envoy may start before its entry is
// synced. A name that can never be served (neither special, nor a SPIFFE or
// trust domain ID) also stays pending and is logged and counted. A stream
// that serves nothing for Config.PendingTimeout is closed.
//
// State of the world cannot name a removed secret: after a removal the
// stream gets a new version without it, and Envoy keeps the old secret
// until it expires. Delta streams list it in removed_resources.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer

	source   Source
	attestor Attestor
	names    names
	log      *slog.Logger
	m        metrics
	certs    *certCache
	streamID atomic.Uint64
	pending  time.Duration
	clock    clock.Clock
}

type metrics struct {
	streams   *prometheus.GaugeVec   // mode
	pushes    *prometheus.CounterVec // mode
	nacks     *prometheus.CounterVec // mode
	stale     *prometheus.CounterVec // mode
	refused   prometheus.Counter
	badNames  prometheus.Counter
	timeouts  prometheus.Counter     // pending streams closed
	fetches   *prometheus.CounterVec // result
	updatesIn prometheus.Counter
}

// New checks cfg and builds a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("sds config: source is required")
	}
	if cfg.Attestor == nil {
		return nil, errors.New("sds config: attestor is required")
	}
	n := names{defaultSVID: cfg.DefaultSVIDName, rootCA: cfg.RootCAName, all: cfg.AllBundlesName}
	if n.defaultSVID == "" {
		n.defaultSVID = DefaultSVIDName
	}
	if n.rootCA == "" {
		n.rootCA = DefaultRootCAName
	}
	if n.all == "" {
		n.all = DefaultAllBundles
	}
	for field, v := range map[string]string{"default svid name": n.defaultSVID, "root ca name": n.rootCA, "all bundles name": n.all} {
		if strings.HasPrefix(v, "spiffe://") {
			return nil, fmt.Errorf("sds config: %s %q must not start with spiffe:// (those names are SPIFFE IDs)", field, v)
		}
	}
	if n.defaultSVID == n.rootCA || n.defaultSVID == n.all || n.rootCA == n.all {
		return nil, fmt.Errorf("sds config: resource names %q, %q and %q must differ", n.defaultSVID, n.rootCA, n.all)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.PendingTimeout < 0 {
		return nil, fmt.Errorf("sds config: pending timeout %s is negative", cfg.PendingTimeout)
	}
	if cfg.PendingTimeout == 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	s := &Server{source: cfg.Source, attestor: cfg.Attestor, names: n, log: log, m: newMetrics(), certs: newCertCache(),
		pending: cfg.PendingTimeout, clock: cfg.Clock}
	if cfg.Metrics != nil {
		for _, c := range s.m.collectors() {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("sds config: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	secretv3.RegisterSecretDiscoveryServiceServer(g, s)
}

func newMetrics() metrics {
	return metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sigil_sds_streams", Help: "Open SDS streams by mode (sotw, delta).",
		}, []string{"mode"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_sds_pushes_total", Help: "SDS responses sent, by mode (sotw, delta, fetch).",
		}, []string{"mode"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_sds_nacks_total", Help: "SDS responses the client rejected (NACK), by mode.",
		}, []string{"mode"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_sds_stale_requests_total", Help: "SDS requests ignored for a stale response nonce, by mode.",
		}, []string{"mode"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_sds_attestation_failures_total", Help: "SDS callers refused because they could not be attested.",
		}),
		badNames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_sds_bad_resource_names_total", Help: "Requested SDS resource names that can never be served.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_sds_pending_timeouts_total", Help: "SDS streams closed because they served nothing they asked for within the pending timeout.",
		}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_sds_fetches_total", Help: "FetchSecrets calls by result (ok, not_found, error).",
		}, []string{"result"}),
		updatesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_sds_source_updates_total", Help: "Updates received from the source across all streams.",
		}),
	}
}

func (m metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.streams, m.pushes, m.nacks, m.stale, m.refused, m.badNames, m.timeouts, m.fetches, m.updatesIn}
}

// attest resolves the caller's selectors; a failure is PermissionDenied
// (the reason is logged, not sent).
func (s *Server) attest(ctx context.Context, log *slog.Logger) (selector.Set, error) {
	sels, err := s.attestor.Attest(ctx)
	if err != nil {
		s.m.refused.Inc()
		log.Warn("sds caller refused: attestation failed", "error", err)
		return nil, status.Error(codes.PermissionDenied, "sds: caller could not be attested")
	}
	return selector.NewSet(sels...), nil
}

// watchCaller watches the caller of ctx for changes to its selectors, if
// the attestor can tell.
func (s *Server) watchCaller(ctx context.Context) (<-chan struct{}, func()) {
	if w, ok := s.attestor.(Watcher); ok {
		return w.Watch(ctx)
	}
	return nil, func() {}
}

// checkNames bounds what a caller may ask for.
func checkNames(lists ...[]string) error {
	total := 0
	for _, l := range lists {
		total += len(l)
		for _, n := range l {
			if len(n) > maxResourceNameLen {
				return status.Errorf(codes.InvalidArgument, "sds: resource name longer than %d bytes", maxResourceNameLen)
			}
		}
	}
	if total > MaxResourceNames {
		return status.Errorf(codes.InvalidArgument, "sds: more than %d resource names", MaxResourceNames)
	}
	return nil
}

func checkTypeURL(u string) error {
	if u != "" && u != SecretTypeURL {
		return status.Errorf(codes.InvalidArgument, "sds: type_url %q is not %s", truncate(u), SecretTypeURL)
	}
	return nil
}
