package nodeattest

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/selector"
)

// Attestation type names, as sent in AttestParams.type.
const (
	TypeJoinToken = "join_token"
	TypeX509PoP   = "x509pop"
)

// Errors callers branch on; attestors wrap them with the reason.
var (
	// ErrInvalid means the parameters are malformed (the caller's fault, not
	// a failed proof).
	ErrInvalid = errors.New("invalid attestation parameters")
	// ErrRefused means the proof did not hold: unknown, used or expired
	// token, untrusted chain, wrong key.
	ErrRefused = errors.New("attestation refused")
)

// Challenge sends nonce to the agent and returns its answer.
type Challenge func(ctx context.Context, nonce []byte) (response []byte, err error)

// Result is a proven node: its agent ID and node selectors (normalized).
type Result struct {
	AgentID   spiffeid.ID
	Selectors []selector.Selector
}

// Attestor checks one kind of node proof.
type Attestor interface {
	// Type is the AttestParams.type this attestor handles.
	Type() string
	// Attest checks params, asking challenge for a proof of possession when
	// the method needs one. Errors wrap ErrInvalid or ErrRefused when the
	// agent is at fault; anything else is the CA's own failure.
	Attest(ctx context.Context, params *nodev1.AttestParams, challenge Challenge) (Result, error)
}
