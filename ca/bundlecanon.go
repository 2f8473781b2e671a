package ca

import (
	"bytes"
	"crypto/x509"
	"slices"
	"strings"
	"time"

	"github.com/sigilhq/sigil/ca/store"
)

// canonicalAuthorities puts a bundle's authorities in one order that does
// not depend on which replica built it: X.509 authorities by DER bytes, JWT
// authorities by key ID (then key, then expiry), exact duplicates dropped.
// Replicas list their own keys first, so without it two replicas disagree
// about an unchanged bundle and each rewrites it on every tick. certs, the
// parsed X.509 authorities in the order of b.X509Authorities, is sorted
// the same way.
func canonicalAuthorities(b *store.Bundle, certs []*x509.Certificate) []*x509.Certificate {
	slices.SortFunc(certs, func(x, y *x509.Certificate) int { return bytes.Compare(x.Raw, y.Raw) })
	certs = slices.CompactFunc(certs, func(x, y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) })
	b.X509Authorities = canonicalDER(b.X509Authorities)
	b.JWTAuthorities = canonicalJWT(b.JWTAuthorities)
	return certs
}

func canonicalDER(in [][]byte) [][]byte {
	out := slices.Clone(in)
	slices.SortFunc(out, bytes.Compare)
	return slices.CompactFunc(out, bytes.Equal)
}

func canonicalJWT(in []store.JWTAuthority) []store.JWTAuthority {
	out := slices.Clone(in)
	slices.SortFunc(out, func(x, y store.JWTAuthority) int {
		if c := strings.Compare(x.KeyID, y.KeyID); c != 0 {
			return c
		}
		if c := bytes.Compare(x.PublicKey, y.PublicKey); c != 0 {
			return c
		}
		return jwtExpiry(x).Compare(jwtExpiry(y))
	})
	return slices.CompactFunc(out, sameJWTAuthority)
}

// sameAuthorities reports whether two bundles carry the same authorities
// and refresh hint, in whatever order each lists them.
func sameAuthorities(a, b store.Bundle) bool {
	if a.RefreshHint != b.RefreshHint {
		return false
	}
	return slices.EqualFunc(canonicalDER(a.X509Authorities), canonicalDER(b.X509Authorities), bytes.Equal) &&
		slices.EqualFunc(canonicalJWT(a.JWTAuthorities), canonicalJWT(b.JWTAuthorities), sameJWTAuthority)
}

func sameJWTAuthority(x, y store.JWTAuthority) bool {
	return x.KeyID == y.KeyID && bytes.Equal(x.PublicKey, y.PublicKey) && jwtExpiry(x).Equal(jwtExpiry(y))
}

// jwtExpiry is the expiry as compared: stores keep time to the microsecond
// at best, and JWT keys expire on whole seconds anyway.
func jwtExpiry(a store.JWTAuthority) time.Time { return a.ExpiresAt.Truncate(time.Second) }
