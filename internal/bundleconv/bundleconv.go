package bundleconv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// FromProto converts a Bundle message into go-spiffe's type, keeping the JWT
// keys' IDs, the sequence number and a positive refresh hint. The message
// may come off the wire: a certificate or key that does not parse, or a JWT
// key of a kind JWT-SVIDs cannot be signed with, is an error.
func FromProto(pb *typesv1.Bundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(pb.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("bundle trust domain %q: %w", pb.GetTrustDomain(), err)
	}
	b := spiffebundle.New(td)
	for _, der := range pb.GetX509Authorities() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: x509 authority: %w", td, err)
		}
		b.AddX509Authority(cert)
	}
	for _, a := range pb.GetJwtAuthorities() {
		pub, err := parseJWTKey(a.GetPublicKey())
		if err != nil {
			return nil, fmt.Errorf("bundle %s: jwt authority %q: %w", td, a.GetKeyId(), err)
		}
		if err := b.AddJWTAuthority(a.GetKeyId(), pub); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", td, err)
		}
	}
	b.SetSequenceNumber(pb.GetSequence())
	if d := pb.GetRefreshHint().AsDuration(); d > 0 {
		b.SetRefreshHint(d)
	}
	return b, nil
}

// parseJWTKey parses a PKIX public key of a kind that signs JWT-SVIDs.
func parseJWTKey(der []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return pub, nil
	default:
		return nil, fmt.Errorf("%T is not a JWT signing key", pub)
	}
}

// ToProto converts go-spiffe's bundle into a Bundle message. The JWT keys
// come out sorted by key ID and without an expiry (go-spiffe keeps none).
func ToProto(b *spiffebundle.Bundle) (*typesv1.Bundle, error) {
	out := &typesv1.Bundle{TrustDomain: b.TrustDomain().Name()}
	for _, c := range b.X509Authorities() {
		out.X509Authorities = append(out.X509Authorities, c.Raw)
	}
	keys := b.JWTAuthorities()
	for _, kid := range slices.Sorted(maps.Keys(keys)) {
		der, err := x509.MarshalPKIXPublicKey(keys[kid])
		if err != nil {
			return nil, fmt.Errorf("bundle %s: jwt authority %q: %w", b.TrustDomain(), kid, err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &typesv1.JWTAuthority{KeyId: kid, PublicKey: der})
	}
	if h, ok := b.RefreshHint(); ok && h > 0 {
		out.RefreshHint = durationpb.New(h)
	}
	out.Sequence, _ = b.SequenceNumber()
	return out, nil
}
