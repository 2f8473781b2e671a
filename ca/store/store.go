package store

import (
	"context"
	"errors"
	"time"

	"github.com/sigilhq/sigil/internal/selector"
)

// Errors callers branch on. Backends wrap them with context.
var (
	ErrNotFound  = errors.New("not found")
	ErrDuplicate = errors.New("already exists")
	ErrExpired   = errors.New("expired")
	// ErrConflict means an optimistic update lost a race (the record's
	// revision changed since it was read).
	ErrConflict = errors.New("conflicting update")
	// ErrInvalid means the caller passed a malformed record (a bad SPIFFE
	// ID, no selectors, an empty actor...); nothing was written.
	ErrInvalid = errors.New("invalid")
)

// Entry is a registration entry: which workloads (selectors) under which
// parent (agent or node alias) get which SPIFFE ID.
type Entry struct {
	ID            string              // assigned by the store on create (random, URL safe)
	SPIFFEID      string              // spiffe://td/path
	ParentID      string              // agent ID or node-alias ID
	Selectors     []selector.Selector // normalized (sorted, unique), at least one
	X509TTL       time.Duration       // 0: CA default
	JWTTTL        time.Duration       // 0: CA default
	DNSNames      []string
	FederatesWith []string // trust domain names
	Admin         bool
	Downstream    bool
	Revision      int64     // global revision at which the entry last changed; set by the store
	CreatedAt     time.Time // set by the store
}

// EntryFilter narrows ListEntries; zero fields match everything.
type EntryFilter struct {
	ParentID string
	SPIFFEID string
	// AfterID and Limit page through the result: only entries whose ID
	// sorts after AfterID, at most Limit of them (0: no limit).
	AfterID string
	Limit   int
}

// AgentFilter pages through ListAgents: only agents whose ID sorts after
// AfterID, at most Limit of them (0: no limit).
type AgentFilter struct {
	AfterID string
	Limit   int
}

// EntryChanges is what changed after a revision: the entries created or
// updated after it and the IDs of those deleted after it.
type EntryChanges struct {
	Revision int64 // the store's current global revision
	Updated  []Entry
	Deleted  []string
}

// EntryRef names a changed entry: ParentID is its parent now, or "" when
// the entry was deleted.
type EntryRef struct {
	ID       string
	ParentID string
}

// ChangeSummary is which entries changed in (After, Revision], without
// their contents: Changed is nil and Overflow set when more changed than
// the caller's limit.
type ChangeSummary struct {
	After    int64
	Revision int64 // the store's current global revision
	Changed  []EntryRef
	Overflow bool
}

// MaxChangePage bounds the limit of one ChangeSummary or ChangedEntries call.
const MaxChangePage = 100000

// MaxChangedParents bounds the parents of one ChangedEntries call.
const MaxChangedParents = 1000

// Agent is an attested node agent.
type Agent struct {
	ID              string // spiffe://td/sigil/agent/<attestor>/<id>
	AttestationType string // join_token, x509pop, k8s_psat
	Serial          string // serial (hex) of the agent's current SVID
	ExpiresAt       time.Time
	Selectors       []selector.Selector // node selectors, normalized
	Banned          bool
	CreatedAt       time.Time // set by the store
	UpdatedAt       time.Time // set by the store
}

// JoinToken is a one-time secret that lets one agent attest.
type JoinToken struct {
	Token     string
	ExpiresAt time.Time
	// SPIFFEID ("" none) is the node alias the attested agent gets: the
	// join-token attestor gives it the node selector
	// join_token:spiffe_id:<SPIFFEID>.
	SPIFFEID string
}

// Bundle is a trust domain's set of authorities: our own or a federated one.
type Bundle struct {
	TrustDomain     string
	X509Authorities [][]byte // DER certificates
	JWTAuthorities  []JWTAuthority
	RefreshHint     time.Duration
	Sequence        uint64
}

// JWTAuthority is one JWT signing public key.
type JWTAuthority struct {
	KeyID     string
	PublicKey []byte // PKIX DER
	ExpiresAt time.Time
}

// AuditEvent records one signing or one admin change.
type AuditEvent struct {
	ID      int64 // assigned by the store, increasing
	Time    time.Time
	Actor   string // who: an admin SPIFFE ID, "local-admin", an agent ID, "ca"
	Action  string // entry.create, entry.update, entry.delete, agent.create, agent.update, agent.evict, token.create, token.consume, bundle.set, bundle.delete, svid.sign, jwt.mint, ca.prepare, ca.activate, ca.taint, ca.revoke
	Target  string // the ID acted on
	Details string // JSON object, never a key or a token
}

// AuditFilter pages through the audit trail in ID order.
type AuditFilter struct {
	AfterID int64
	Limit   int // 0: no limit
}

// Entries keeps registration entries. Every change bumps the store's global
// revision by one and writes an audit event in the same transaction, so a
// failed call leaves nothing behind.
type Entries interface {
	// CreateEntries creates all or none; a duplicate (same SPIFFE ID,
	// parent ID and selectors as a stored entry or another in the batch)
	// fails the whole batch with ErrDuplicate.
	CreateEntries(ctx context.Context, actor string, entries []Entry) ([]Entry, error)
	// UpdateEntry replaces the entry with e.ID. If e.Revision is not zero
	// and differs from the stored one the update fails with ErrConflict.
	UpdateEntry(ctx context.Context, actor string, e Entry) (Entry, error)
	DeleteEntry(ctx context.Context, actor string, id string) (Entry, error)
	GetEntry(ctx context.Context, id string) (Entry, error)
	// ListEntries returns matching entries ordered by ID.
	ListEntries(ctx context.Context, f EntryFilter) ([]Entry, error)
	// EntriesSince returns what changed after revision rev (0: everything).
	EntriesSince(ctx context.Context, rev int64) (EntryChanges, error)
	// Revision returns the current global revision (0 when nothing was ever written).
	Revision(ctx context.Context) (int64, error)
	// ChangeSummary returns which entries changed after revision after,
	// read from one snapshot: at most limit (1 to MaxChangePage) of them,
	// or none and Overflow when more changed.
	ChangeSummary(ctx context.Context, after int64, limit int) (ChangeSummary, error)
	// ChangedEntries returns the entries under one of parents (at most
	// MaxChangedParents) whose revision is in (after, upTo], ordered by
	// revision, at most limit (1 to MaxChangePage) of them.
	ChangedEntries(ctx context.Context, parents []string, after, upTo int64, limit int) ([]Entry, error)
}

// Agents keeps attested agents.
type Agents interface {
	CreateAgent(ctx context.Context, actor string, a Agent) (Agent, error)
	UpdateAgent(ctx context.Context, actor string, a Agent) (Agent, error)
	// DeleteAgent evicts: the agent must attest again.
	DeleteAgent(ctx context.Context, actor string, id string) error
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns matching agents ordered by ID.
	ListAgents(ctx context.Context, f AgentFilter) ([]Agent, error)
}

// JoinTokens keeps one-time join tokens.
type JoinTokens interface {
	CreateJoinToken(ctx context.Context, actor string, t JoinToken) error
	// ConsumeJoinToken deletes the token and returns it; exactly one of
	// several concurrent callers succeeds. A token past ExpiresAt at now is
	// deleted and reported as ErrExpired; an unknown one as ErrNotFound.
	ConsumeJoinToken(ctx context.Context, token string, now time.Time) (JoinToken, error)
	// PruneJoinTokens deletes tokens that expired before now.
	PruneJoinTokens(ctx context.Context, now time.Time) (int, error)
}

// Bundles keeps trust bundles by trust domain name.
type Bundles interface {
	// SetBundle creates or replaces a bundle.
	SetBundle(ctx context.Context, actor string, b Bundle) error
	GetBundle(ctx context.Context, trustDomain string) (Bundle, error)
	ListBundles(ctx context.Context) ([]Bundle, error)
	DeleteBundle(ctx context.Context, actor string, trustDomain string) error
}

// FederationRelationship is a federated trust domain whose bundle the CA
// fetches from the peer's SPIFFE bundle endpoint.
type FederationRelationship struct {
	TrustDomain       string // the peer's trust domain name
	BundleEndpointURL string // https://...
	Profile           string // https_spiffe | https_web
	EndpointSPIFFEID  string // https_spiffe: the ID the endpoint's certificate carries
	WebRootsPEM       []byte // https_web: CA certificates to trust instead of the system roots; nil: system roots
}

// MaxFederations bounds the stored federation relationships.
const MaxFederations = 256

// Federations keeps federation relationships. Each change writes an audit
// event (federation.create, federation.delete) in the same transaction.
type Federations interface {
	// CreateFederation fails with ErrDuplicate when the trust domain has a
	// relationship already, and with ErrLimit when MaxFederations exist.
	CreateFederation(ctx context.Context, actor string, f FederationRelationship) (FederationRelationship, error)
	GetFederation(ctx context.Context, trustDomain string) (FederationRelationship, error)
	// ListFederations returns every relationship ordered by trust domain.
	ListFederations(ctx context.Context) ([]FederationRelationship, error)
	DeleteFederation(ctx context.Context, actor string, trustDomain string) error
}

// RevokedSVID is one revoked X.509-SVID, kept until it would have expired.
type RevokedSVID struct {
	Serial    string    // lowercase hex, no leading zeros (big.Int.Text(16))
	SPIFFEID  string    // optional: what the operator said it was for
	NotAfter  time.Time // after this the SVID is dead anyway and the record is pruned
	RevokedAt time.Time // set by the store
}

// RevokedID revokes every X.509-SVID of one SPIFFE ID issued before
// RevokedAt, kept until the last of them would have expired.
type RevokedID struct {
	SPIFFEID  string
	NotAfter  time.Time // after this every such SVID is dead anyway and the record is pruned
	RevokedAt time.Time // set by the store; revoking again moves it to the later time
}

// BatchError is the failure of one record of a batch call (CreateEntries):
// Index is its position in the batch, from 0; nothing of the batch was
// written.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string { return e.Err.Error() }
func (e *BatchError) Unwrap() error { return e.Err }

// ErrLimit means a bounded table is full; nothing was written.
var ErrLimit = errors.New("limit reached")

// Revocations keeps revoked X.509-SVID serials, shared by every CA replica
// of the store. Each change writes an audit event in the same transaction.
type Revocations interface {
	// RevokeSVID records r. Revoking a serial again keeps the later
	// NotAfter. When limit unexpired (at now) revocations exist already
	// it fails with ErrLimit.
	RevokeSVID(ctx context.Context, actor string, r RevokedSVID, now time.Time, limit int) error
	// ListRevokedSVIDs returns the revocations not yet expired at now,
	// ordered by serial.
	ListRevokedSVIDs(ctx context.Context, now time.Time) ([]RevokedSVID, error)
	// RevokeSPIFFEID records r (audit event svid.revoke_id). Revoking an
	// ID again moves RevokedAt to now and keeps the later NotAfter. When
	// limit unexpired ID revocations exist already it fails with ErrLimit.
	RevokeSPIFFEID(ctx context.Context, actor string, r RevokedID, now time.Time, limit int) error
	// ListRevokedIDs returns the ID revocations not yet expired at now,
	// ordered by SPIFFE ID.
	ListRevokedIDs(ctx context.Context, now time.Time) ([]RevokedID, error)
	// PruneRevokedSVIDs deletes the revocations (by serial and by ID) that
	// expired before now.
	PruneRevokedSVIDs(ctx context.Context, now time.Time) (int, error)
}

// SignedCRL is one X.509 CRL a CA replica signed with one of its keys.
type SignedCRL struct {
	CAID       string    // the replica (its journal's instance ID)
	KeyID      string    // hex SubjectKeyId of the signing certificate
	DER        []byte    // the CRL
	NextUpdate time.Time // after this the CRL is stale and not listed
}

// MaxSignedCRLs bounds the CRLs one replica stores.
const MaxSignedCRLs = 64

// CRLs keeps the CRLs every CA replica signed, so that each replica hands
// its agents the CRLs of every replica's keys. They are derived data (the
// revocations are the record): no audit events.
type CRLs interface {
	// PutCRLs replaces caID's CRLs with crls (at most MaxSignedCRLs) and
	// deletes every replica's CRLs that are stale at now.
	PutCRLs(ctx context.Context, caID string, crls []SignedCRL, now time.Time) error
	// ListCRLs returns every replica's CRLs not stale at now, ordered by
	// replica and key ID.
	ListCRLs(ctx context.Context, now time.Time) ([]SignedCRL, error)
}

// Journals keeps each CA instance's key journal as an opaque document
// (owned by package ca), so that a restart resumes with the same keys.
type Journals interface {
	SaveJournal(ctx context.Context, caID string, doc []byte) error
	LoadJournal(ctx context.Context, caID string) ([]byte, error)
}

// Audit keeps the audit trail.
type Audit interface {
	AppendAudit(ctx context.Context, ev AuditEvent) (AuditEvent, error)
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
}

// Store is the whole datastore, what a backend provides.
type Store interface {
	Entries
	EntryBatches
	Agents
	JoinTokens
	Bundles
	Federations
	Journals
	Revocations
	CRLs
	Audit
	Close() error
}
