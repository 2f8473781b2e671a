package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// JWTParams shapes a JWT-SVID.
type JWTParams struct {
	Audience []string      // at least one
	TTL      time.Duration // 0: the CA's default
	WithJTI  bool          // add a random "jti"
}

// MintJWTSVID signs a JWT-SVID for id with the active JWT key, then checks
// it with go-spiffe's parser and the key's signature before returning it.
func (c *CA) MintJWTSVID(ctx context.Context, id spiffeid.ID, p JWTParams) (string, error) {
	token, err := c.mintJWT(id, p)
	c.metrics.signed(JWT, err)
	if err != nil {
		return "", fmt.Errorf("mint jwt-svid for %s: %w", id, err)
	}
	return token, nil
}

func (c *CA) mintJWT(id spiffeid.ID, p JWTParams) (string, error) {
	if !id.MemberOf(c.cfg.TrustDomain) {
		return "", fmt.Errorf("SPIFFE ID %s is not in trust domain %s", id, c.cfg.TrustDomain)
	}
	if len(p.Audience) == 0 {
		return "", errors.New("at least one audience is required")
	}
	for _, a := range p.Audience {
		if a == "" {
			return "", errors.New("empty audience")
		}
	}
	st := c.cur.Load()
	if st == nil || st.activeJWT == nil {
		return "", ErrNotReady
	}
	slot := st.activeJWT
	alg, err := jwtAlgorithm(slot)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: alg, Key: cryptosigner.Opaque(slot.signer)},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", slot.rec.ID),
	)
	if err != nil {
		return "", err
	}
	now := c.cfg.Now()
	ttl := p.TTL
	if ttl <= 0 {
		ttl = c.cfg.JWTSVIDTTL
	}
	exp := now.Add(ttl)
	if exp.After(slot.rec.NotAfter) {
		exp = slot.rec.NotAfter
	}
	claims := jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(p.Audience),
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(now),
		Issuer:   c.cfg.JWTIssuer,
	}
	if p.WithJTI {
		if claims.ID, err = randomKeyID(); err != nil {
			return "", err
		}
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", err
	}
	// Check: go-spiffe must parse it, and the signature must verify with the
	// published key. (Expiry is checked against the CA's clock above; the
	// go-spiffe validator reads the wall clock, which tests do not control.)
	if _, err := jwtsvid.ParseInsecure(token, p.Audience); err != nil {
		return "", fmt.Errorf("minted jwt-svid fails go-spiffe's parser: %w", err)
	}
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		return "", err
	}
	var out jwt.Claims
	if err := parsed.Claims(slot.public, &out); err != nil {
		return "", fmt.Errorf("minted jwt-svid does not verify: %w", err)
	}
	return token, nil
}

func jwtAlgorithm(slot *jwtSlot) (jose.SignatureAlgorithm, error) {
	switch k := slot.public.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return jose.ES256, nil
		case 384:
			return jose.ES384, nil
		}
	case *rsa.PublicKey:
		return jose.RS256, nil
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("jwt key %s: unsupported key type %T", slot.rec.ID, slot.public)
}
