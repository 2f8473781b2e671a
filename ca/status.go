package ca

import (
	"crypto/x509"
	"time"

	"github.com/sigilhq/sigil/ca/upstream"
)

// KeyKind names one of the CA's two key families.
type KeyKind string

// The key kinds.
const (
	X509 KeyKind = "x509"
	JWT  KeyKind = "jwt"
)

// KeyState is where a key stands in its life.
type KeyState string

// The key states, in the order a key passes through them.
const (
	Prepared KeyState = "prepared" // published in the bundle, not yet signing
	Active   KeyState = "active"   // signing
	Old      KeyState = "old"      // retired from signing, still published until it expires or is revoked
)

// KeyStatus describes one key of the journal.
type KeyStatus struct {
	Kind      KeyKind
	ID        string // X.509: hex SHA-256 of the CA certificate's SubjectPublicKeyInfo; JWT: the kid
	State     KeyState
	NotBefore time.Time
	NotAfter  time.Time
	Tainted   bool
}

// Status is the journal as operators see it.
type Status struct {
	TrustDomain string
	Keys        []KeyStatus
	// UpstreamRoots are what the signing certificates chain to: agents'
	// bootstrap trust, not the bundle's authorities.
	UpstreamRoots []*x509.Certificate
	// Upstream is how the latest requests to a networked upstream
	// (step-ca) went; nil for self_signed and disk.
	Upstream *upstream.Health
	// Rekey is the re-key after a leaf revocation in progress (nil: none),
	// LastRekey the last one that ended.
	Rekey, LastRekey *RekeyStatus
	// Roots is the root journal (rootrot.go), oldest first.
	Roots []RootStatus
}
