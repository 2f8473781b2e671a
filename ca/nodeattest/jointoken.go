package nodeattest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// MaxTokenLen bounds a join token from outside.
const MaxTokenLen = 256

// TokenStore is the part of the datastore the join token attestor uses.
type TokenStore interface {
	ConsumeJoinToken(ctx context.Context, token string, now time.Time) (store.JoinToken, error)
}

// JoinToken attests nodes by one-time join tokens (sigil token create). The
// agent ID is spiffe://TD/sigil/agent/join_token/<token>; there are no node
// selectors.
type JoinToken struct {
	td    spiffeid.TrustDomain
	store TokenStore
	now   func() time.Time
}

// NewJoinToken returns the join token attestor; now defaults to time.Now.
func NewJoinToken(td spiffeid.TrustDomain, s TokenStore, now func() time.Time) (*JoinToken, error) {
	if td.IsZero() || s == nil {
		return nil, errors.New("join token attestor: trust domain and store are required")
	}
	if now == nil {
		now = time.Now
	}
	return &JoinToken{td: td, store: s, now: now}, nil
}

// Type implements Attestor.
func (j *JoinToken) Type() string { return TypeJoinToken }

// Attest consumes the token: it works once, and never after it expired.
func (j *JoinToken) Attest(ctx context.Context, p *nodev1.AttestParams, _ Challenge) (Result, error) {
	tok := p.GetToken()
	switch {
	case tok == "":
		return Result{}, fmt.Errorf("%w: join_token: token is empty", ErrInvalid)
	case len(tok) > MaxTokenLen:
		return Result{}, fmt.Errorf("%w: join_token: token longer than %d bytes", ErrInvalid, MaxTokenLen)
	case len(p.GetCertificates()) > 0:
		return Result{}, fmt.Errorf("%w: join_token: certificates are not used by this method", ErrInvalid)
	}
	// Check the ID before consuming, so a malformed token is not burnt.
	id, err := sigilid.Agent(j.td, TypeJoinToken, tok)
	if err != nil {
		return Result{}, fmt.Errorf("%w: join_token: token holds characters not allowed in a SPIFFE ID path", ErrInvalid)
	}
	rec, err := j.store.ConsumeJoinToken(ctx, tok, j.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Result{}, fmt.Errorf("%w: join token is unknown or was already used", ErrRefused)
	case errors.Is(err, store.ErrExpired):
		return Result{}, fmt.Errorf("%w: join token expired", ErrRefused)
	case err != nil:
		return Result{}, fmt.Errorf("consume join token: %w", err)
	}
	if rec.SPIFFEID == "" {
		return Result{AgentID: id}, nil
	}
	// The token names the agent's SPIFFE ID: the node selector matches the
	// node-alias entry that `sigil token create --spiffe-id` made.
	return Result{AgentID: id, Selectors: []selector.Selector{SPIFFEIDSelector(rec.SPIFFEID)}}, nil
}

// SPIFFEIDSelector is the node selector of an agent that attested with a
// join token naming id: join_token:spiffe_id:<id>.
func SPIFFEIDSelector(id string) selector.Selector {
	return selector.Selector{Type: TypeJoinToken, Value: "spiffe_id:" + id}
}
