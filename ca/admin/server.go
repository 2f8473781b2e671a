package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/federation"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// Authority is what the admin API needs from the CA's key journal.
type Authority interface {
	Status(ctx context.Context) (ca.Status, error)
	Prepare(ctx context.Context, kind ca.KeyKind) (ca.KeyStatus, error)
	Activate(ctx context.Context, kind ca.KeyKind) (ca.KeyStatus, error)
	Taint(ctx context.Context, kind ca.KeyKind, keyID string) error
	Revoke(ctx context.Context, kind ca.KeyKind, keyID string) error
	RevokeSVID(ctx context.Context, actor, serial, spiffeID string) error
	RevokeSPIFFEID(ctx context.Context, actor, spiffeID string) error
}

// Store is the part of the datastore the admin API uses.
type Store interface {
	CreateEntries(ctx context.Context, actor string, entries []store.Entry) ([]store.Entry, error)
	UpdateEntry(ctx context.Context, actor string, e store.Entry) (store.Entry, error)
	DeleteEntry(ctx context.Context, actor string, id string) (store.Entry, error)
	GetEntry(ctx context.Context, id string) (store.Entry, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)

	UpdateAgent(ctx context.Context, actor string, a store.Agent) (store.Agent, error)
	DeleteAgent(ctx context.Context, actor string, id string) error
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error)

	CreateJoinToken(ctx context.Context, actor string, t store.JoinToken) error

	SetBundle(ctx context.Context, actor string, b store.Bundle) error
	GetBundle(ctx context.Context, trustDomain string) (store.Bundle, error)
	ListBundles(ctx context.Context) ([]store.Bundle, error)
	DeleteBundle(ctx context.Context, actor string, trustDomain string) error

	CreateFederation(ctx context.Context, actor string, f store.FederationRelationship) (store.FederationRelationship, error)
	GetFederation(ctx context.Context, trustDomain string) (store.FederationRelationship, error)
	ListFederations(ctx context.Context) ([]store.FederationRelationship, error)
	DeleteFederation(ctx context.Context, actor string, trustDomain string) error

	AppendAudit(ctx context.Context, ev store.AuditEvent) (store.AuditEvent, error)
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
}

// Defaults and bounds.
const (
	DefaultTokenTTL = 10 * time.Minute
	MaxTokenTTL     = 30 * 24 * time.Hour
	MaxX509TTL      = 30 * 24 * time.Hour
	MaxJWTTTL       = 24 * time.Hour
	// MaxBatch bounds CreateEntries so one call cannot hold the store's
	// write transaction for long.
	MaxBatch = 1000
	// DefaultAuditLimit is how many audit events ListAudit returns when the
	// caller names no limit; it is also the most it returns.
	DefaultAuditLimit = 1000
)

// LocalAdmin is the actor recorded for calls over the local unix socket.
const LocalAdmin = "local-admin"

// Config configures a Server.
type Config struct {
	TrustDomain     spiffeid.TrustDomain
	Store           Store
	Authority       Authority
	Now             func() time.Time // default time.Now
	Logger          *slog.Logger     // default slog.Default()
	DefaultTokenTTL time.Duration    // default DefaultTokenTTL
	Rand            io.Reader        // join token randomness; default crypto/rand.Reader
	// PageTokenKey authenticates the page tokens of List calls; default 32
	// random bytes, so a token is accepted only by the process that issued
	// it (CA replicas that share a key accept each other's).
	PageTokenKey []byte
	// Selectors are the selector types entries may use: those the
	// attestors in this deployment make (default selector.Builtin()).
	Selectors *selector.Types
	// Federation reports how each relationship's refreshes went; nil: no
	// statuses are shown.
	Federation FederationStatuses
	// ConfigFederations are the relationships ca.yaml names: listed with
	// source "config", not changeable over the API.
	ConfigFederations []store.FederationRelationship
}

// FederationStatuses is what the admin API reads of the federation refresher.
type FederationStatuses interface {
	Statuses() []federation.Status
}

// Server implements adminv1.AdminServer.
type Server struct {
	adminv1.UnimplementedAdminServer

	td       spiffeid.TrustDomain
	store    Store
	auth     Authority
	now      func() time.Time
	log      *slog.Logger
	tokenTTL time.Duration
	rand     io.Reader
	pager    *pager
	sels     *selector.Types
	fed      FederationStatuses
	fedConf  []store.FederationRelationship
}

var _ adminv1.AdminServer = (*Server)(nil)

// New checks cfg and fills its defaults.
func New(cfg Config) (*Server, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("admin: trust domain is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("admin: store is required")
	}
	if cfg.Authority == nil {
		return nil, errors.New("admin: authority is required")
	}
	s := &Server{
		td:       cfg.TrustDomain,
		store:    cfg.Store,
		auth:     cfg.Authority,
		now:      cfg.Now,
		log:      cfg.Logger,
		tokenTTL: cfg.DefaultTokenTTL,
		rand:     cfg.Rand,
		sels:     cfg.Selectors,
		fed:      cfg.Federation,
		fedConf:  cfg.ConfigFederations,
	}
	if s.sels == nil {
		s.sels = selector.Builtin()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.tokenTTL == 0 {
		s.tokenTTL = DefaultTokenTTL
	}
	if s.tokenTTL < 0 || s.tokenTTL > MaxTokenTTL {
		return nil, fmt.Errorf("admin: default token ttl %s is outside (0, %s]", s.tokenTTL, MaxTokenTTL)
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	key := cfg.PageTokenKey
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("admin: page token key: %w", err)
		}
	}
	if len(key) < 16 {
		return nil, errors.New("admin: page token key must be at least 16 bytes")
	}
	s.pager = &pager{key: key, now: s.now}
	return s, nil
}

// Register adds the Admin service to gs. The server must have been built
// with ServerOptions (or UnaryInterceptor and StreamInterceptor): without
// them every call is refused, since no caller is authenticated.
func (s *Server) Register(gs *grpc.Server) {
	adminv1.RegisterAdminServer(gs, s)
}
