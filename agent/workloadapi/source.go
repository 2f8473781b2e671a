package workloadapi

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/internal/selector"
)

// Identity is one X509-SVID a workload may hold.
type Identity struct {
	EntryID string
	SVID    *x509svid.SVID // leaf first, then intermediates; with its private key
}

// Update is everything a workload with some set of selectors may see at one
// moment.
type Update struct {
	// Identities whose entry selectors are all among the workload's
	// selectors, sorted by EntryID. Empty: the workload has no identity.
	Identities []Identity
	// Bundle is our own trust domain's bundle.
	Bundle *spiffebundle.Bundle
	// FederatedBundles are the bundles of the trust domains the workload's
	// entries federate with.
	FederatedBundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
}

// Source is what the Workload API needs from the agent's cache.
type Source interface {
	// Subscribe follows what a workload with sels may see.
	Subscribe(sels selector.Set) Subscription
	// FetchJWTSVID mints (or returns a cached, fresh) JWT-SVID for id, which
	// must be one of the identities sels may hold; a zero id means each of
	// them. It fails with ErrNoIdentity when sels hold none.
	FetchJWTSVID(ctx context.Context, sels selector.Set, id spiffeid.ID, audience []string) ([]JWTSVID, error)
}

// JWTSVID is a minted token and the ID it is for.
type JWTSVID struct {
	ID    spiffeid.ID
	Token string
}

// Subscription delivers Updates.
type Subscription interface {
	// Updates receives the current Update at once, then a new one after
	// every change. A slow reader misses intermediate states, never the
	// latest one.
	Updates() <-chan Update
	// Close ends the subscription; Updates is not closed.
	Close()
}
