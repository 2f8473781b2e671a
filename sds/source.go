package sds

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/internal/selector"
)

// Identity is one X509-SVID a caller may hold.
type Identity struct {
	EntryID string
	SVID    *x509svid.SVID // leaf first, then intermediates; with its private key
}

// Update is everything a caller with some set of selectors may see at one
// moment.
type Update struct {
	// Identities the caller holds. Empty: the caller has no identity (yet).
	Identities []Identity
	// Bundle is the caller's own trust domain's bundle.
	Bundle *spiffebundle.Bundle
	// FederatedBundles are the bundles of the trust domains the caller's
	// entries federate with.
	FederatedBundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
}

// Source follows what callers with a given set of selectors may see.
type Source interface {
	Subscribe(sels selector.Set) Subscription
}

// Subscription delivers Updates: the current state at once, then a new one
// after every change. A slow reader may miss intermediate states, never the
// latest one.
type Subscription interface {
	Updates() <-chan Update
	// Close ends the subscription. Updates need not be closed by it.
	Close()
}

// Attestor gives the selectors of the caller of a stream, from what the
// transport put in ctx (the agent uses the unix socket's peer credentials).
// An error means the caller cannot be attested and is refused.
type Attestor interface {
	Attest(ctx context.Context) ([]selector.Selector, error)
}
