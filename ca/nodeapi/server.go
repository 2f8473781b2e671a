package nodeapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/store"
)

// Store is the part of the datastore the node API uses.
type Store interface {
	GetEntry(ctx context.Context, id string) (store.Entry, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
	ChangeSummary(ctx context.Context, after int64, limit int) (store.ChangeSummary, error)
	ChangedEntries(ctx context.Context, parents []string, after, upTo int64, limit int) ([]store.Entry, error)
	Revision(ctx context.Context) (int64, error)

	CreateAgent(ctx context.Context, actor string, a store.Agent) (store.Agent, error)
	UpdateAgent(ctx context.Context, actor string, a store.Agent) (store.Agent, error)
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error)

	GetBundle(ctx context.Context, trustDomain string) (store.Bundle, error)
	ListBundles(ctx context.Context) ([]store.Bundle, error)

	AppendAudit(ctx context.Context, ev store.AuditEvent) (store.AuditEvent, error)
}

// Authority is what the node API needs from the CA.
type Authority interface {
	ID() spiffeid.ID
	SignX509SVID(ctx context.Context, csr *ca.CSR, p ca.SVIDParams) (*ca.X509SVID, error)
	MintJWTSVID(ctx context.Context, id spiffeid.ID, p ca.JWTParams) (string, error)
	TaintedX509() (tainted, revoked []string)
	// CRLs are DER X.509 CRLs, one per signing key of this CA.
	CRLs() [][]byte
}

var _ Authority = (*ca.CA)(nil)

// Defaults and bounds.
const (
	// MaxBatch bounds the CSRs in one SignX509SVIDs call.
	MaxBatch = 1000
	// MaxAudiences bounds the audiences of one JWT-SVID.
	MaxAudiences = 16
	// DefaultPollInterval is how often Run looks for changes to push in
	// the CA's state and in a Store that does not push its own.
	DefaultPollInterval = 200 * time.Millisecond
	// DefaultSafetyPoll is how often Run reads a Store that pushes its
	// changes (a Notifier) even without a change reported.
	DefaultSafetyPoll = 5 * time.Second
	// DefaultAttestTimeout bounds one Attest call, challenges included.
	DefaultAttestTimeout = 30 * time.Second
	// DefaultChangeSummaryItems bounds the changed entries Run (and a Sync
	// stream that fell behind it) names per read; past it every stream
	// recomputes its agent's set instead.
	DefaultChangeSummaryItems = 10000
	// DefaultSyncPageItems bounds the changed entries one Sync stream
	// reads from the store at a time; each page goes out as a response of
	// its own, so the agent applies a bulk write page by page.
	DefaultSyncPageItems = 5000
)

// Config configures a Server. TrustDomain, Store and CA are required.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Store       Store
	CA          Authority
	// Attestors accept node proofs, one per AttestParams.type.
	Attestors []nodeattest.Attestor
	// AgentSVIDTTL is the life of agent SVIDs; 0: the CA's X509-SVID default.
	AgentSVIDTTL time.Duration
	// PollInterval is how often Run checks the CA, and a Store that is not
	// a Notifier, for changes; default DefaultPollInterval.
	PollInterval time.Duration
	// SafetyPoll is how often Run reads a Store that is a Notifier even
	// when it reports no change; default DefaultSafetyPoll.
	SafetyPoll time.Duration
	// AttestTimeout bounds an Attest call, so a silent client cannot hold
	// it open; default DefaultAttestTimeout.
	AttestTimeout time.Duration
	// SyncPartItems and SyncPartBytes bound one Sync message; a larger
	// response is split into parts. Defaults DefaultSyncPartItems and
	// DefaultSyncPartBytes.
	SyncPartItems int
	SyncPartBytes int
	// ChangeSummaryItems and SyncPageItems bound the store reads of Run
	// and of Sync streams, at most store.MaxChangePage each. Defaults
	// DefaultChangeSummaryItems and DefaultSyncPageItems.
	ChangeSummaryItems int
	SyncPageItems      int
	Now                func() time.Time      // default time.Now
	Logger             *slog.Logger          // default: discard
	Metrics            prometheus.Registerer // optional
}

// Server implements nodev1.NodeServer.
type Server struct {
	nodev1.UnimplementedNodeServer

	cfg       Config
	td        spiffeid.TrustDomain
	caID      string
	attestors map[string]nodeattest.Attestor
	log       *slog.Logger
	now       func() time.Time
	m         *metrics
	hub       *hub
	live      *liveStreams
	codec     codec
}

var _ nodev1.NodeServer = (*Server)(nil)

// New checks cfg and fills defaults. It starts nothing: call Run.
func New(cfg Config) (*Server, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("node api: trust domain is required")
	}
	if cfg.Store == nil || cfg.CA == nil {
		return nil, errors.New("node api: store and ca are required")
	}
	if cfg.CA.ID().TrustDomain() != cfg.TrustDomain {
		return nil, fmt.Errorf("node api: ca %s is not in trust domain %s", cfg.CA.ID(), cfg.TrustDomain)
	}
	if cfg.AgentSVIDTTL < 0 {
		return nil, errors.New("node api: agent svid ttl must not be negative")
	}
	if cfg.SyncPartItems <= 0 {
		cfg.SyncPartItems = DefaultSyncPartItems
	}
	if cfg.SyncPartBytes <= 0 {
		cfg.SyncPartBytes = DefaultSyncPartBytes
	}
	for _, b := range []struct {
		name string
		v    *int
		def  int
	}{{"change summary items", &cfg.ChangeSummaryItems, DefaultChangeSummaryItems}, {"sync page items", &cfg.SyncPageItems, DefaultSyncPageItems}} {
		if *b.v <= 0 {
			*b.v = b.def
		}
		if *b.v > store.MaxChangePage {
			return nil, fmt.Errorf("node api: %s %d over the store's page limit %d", b.name, *b.v, store.MaxChangePage)
		}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.SafetyPoll <= 0 {
		cfg.SafetyPoll = DefaultSafetyPoll
	}
	if cfg.AttestTimeout <= 0 {
		cfg.AttestTimeout = DefaultAttestTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	atts := make(map[string]nodeattest.Attestor, len(cfg.Attestors))
	for _, a := range cfg.Attestors {
		if a == nil {
			return nil, errors.New("node api: nil attestor")
		}
		if _, dup := atts[a.Type()]; dup {
			return nil, fmt.Errorf("node api: two attestors of type %q", a.Type())
		}
		atts[a.Type()] = a
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("node api: %w", err)
	}
	cdc, err := newCodec()
	if err != nil {
		return nil, fmt.Errorf("node api: %w", err)
	}
	return &Server{
		cfg:       cfg,
		td:        cfg.TrustDomain,
		caID:      cfg.CA.ID().String(),
		attestors: atts,
		log:       cfg.Logger,
		now:       cfg.Now,
		m:         m,
		hub:       newHub(),
		live:      newLiveStreams(),
		codec:     cdc,
	}, nil
}

// Register adds the Node service to gs.
func (s *Server) Register(gs *grpc.Server) { nodev1.RegisterNodeServer(gs, s) }

// ServerOptions returns the interceptors that authenticate agents on every
// Node call but Attest, and the codec that lets Sync send a response
// marshalled once for many streams, for grpc.NewServer. Other services are
// left alone (the codec marshals their messages as gRPC's own does).
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.ForceServerCodecV2(s.codec),
	}
}

// audit writes an audit event that outlives the request.
func (s *Server) audit(ctx context.Context, actor, action, target string, details any) {
	ev := store.AuditEvent{Time: s.now(), Actor: actor, Action: action, Target: target, Details: jsonDetails(details)}
	if _, err := s.cfg.Store.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Error("write audit event", "action", action, "actor", actor, "error", err)
	}
}
