package workload

import (
	"errors"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
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
	// selectors, sorted by EntryID. Empty: the workload has no identity (yet).
	Identities []Identity
	// Bundle is our own trust domain's bundle.
	Bundle *spiffebundle.Bundle
	// FederatedBundles are the bundles of the trust domains the workload's
	// entries federate with.
	FederatedBundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
	// X509CRLs are DER X.509 CRLs of our trust domain's signing keys: the
	// SVIDs revoked one by one. Verifiers that read CRLs (Envoy) refuse
	// what they list.
	X509CRLs [][]byte
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

// JWTSVID is a minted token and the ID it is for.
type JWTSVID struct {
	ID    spiffeid.ID
	Token string
}

// ErrNoIdentity means the caller's selectors match no registration entry.
var ErrNoIdentity = errors.New("no identity issued")
