package workloadtest

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload"
)

// Entry is one registration entry of a Source.
type Entry struct {
	ID            string
	Selectors     []selector.Selector
	SVID          *x509svid.SVID
	FederatesWith []spiffeid.TrustDomain
}

// Source stands in for the agent's cache: entries with real SVIDs from
// internal/testca, a JWT signing key published in the bundle, and
// subscriptions that get the latest Update after every change.
type Source struct {
	mu        sync.Mutex
	entries   map[string]Entry
	bundle    *spiffebundle.Bundle
	crls      [][]byte
	federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	subs      map[*sub]struct{}
	jwtKey    crypto.Signer
	jwtKID    string
	jwtMints  int
}

// New makes a source whose bundle holds ca's roots and a fresh JWT key.
func New(t testing.TB, ca *testca.CA) *Source {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.FromX509Authorities(ca.TrustDomain(), ca.Roots())
	kid := "kid-1"
	if err := b.AddJWTAuthority(kid, key.Public()); err != nil {
		t.Fatal(err)
	}
	return &Source{
		entries:   map[string]Entry{},
		bundle:    b,
		federated: map[spiffeid.TrustDomain]*spiffebundle.Bundle{},
		subs:      map[*sub]struct{}{},
		jwtKey:    key,
		jwtKID:    kid,
	}
}

// Put adds or replaces an entry.
func (s *Source) Put(e Entry) { s.change(func() { s.entries[e.ID] = e }) }

// Delete removes an entry.
func (s *Source) Delete(id string) { s.change(func() { delete(s.entries, id) }) }

// SetBundle replaces the own trust domain's bundle.
func (s *Source) SetBundle(b *spiffebundle.Bundle) { s.change(func() { s.bundle = b }) }

// SetCRLs sets our trust domain's DER X.509 CRLs.
func (s *Source) SetCRLs(crls [][]byte) { s.change(func() { s.crls = crls }) }

// SetFederated sets (or with nil removes) a federated trust domain's bundle.
func (s *Source) SetFederated(td spiffeid.TrustDomain, b *spiffebundle.Bundle) {
	s.change(func() {
		if b == nil {
			delete(s.federated, td)
		} else {
			s.federated[td] = b
		}
	})
}

// Subscribers counts open subscriptions.
func (s *Source) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// JWTMints counts minted JWT-SVIDs.
func (s *Source) JWTMints() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwtMints
}

// change applies fn and pushes the new state to every subscription.
func (s *Source) change(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
	for sub := range s.subs {
		sub.push(s.updateLocked(sub.sels))
	}
}

func (s *Source) updateLocked(sels selector.Set) workload.Update {
	u := workload.Update{Bundle: s.bundle, FederatedBundles: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}, X509CRLs: s.crls}
	for _, e := range s.entries {
		if !sels.Superset(e.Selectors) {
			continue
		}
		u.Identities = append(u.Identities, workload.Identity{EntryID: e.ID, SVID: e.SVID})
		for _, td := range e.FederatesWith {
			if b, ok := s.federated[td]; ok {
				u.FederatedBundles[td] = b
			}
		}
	}
	slices.SortFunc(u.Identities, func(a, b workload.Identity) int { return cmp.Compare(a.EntryID, b.EntryID) })
	return u
}

// Subscribe follows what a workload with sels may see.
func (s *Source) Subscribe(sels selector.Set) workload.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := &sub{src: s, sels: sels, ch: make(chan workload.Update, 1)}
	sub.push(s.updateLocked(sels))
	s.subs[sub] = struct{}{}
	return sub
}

// FetchJWTSVID mints a JWT-SVID (valid 5 minutes) for id, or for each
// identity sels hold when id is zero.
func (s *Source) FetchJWTSVID(_ context.Context, sels selector.Set, id spiffeid.ID, audience []string) ([]workload.JWTSVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []workload.JWTSVID
	for _, ident := range s.updateLocked(sels).Identities {
		if !id.IsZero() && ident.SVID.ID != id {
			continue
		}
		tok, err := s.mintLocked(ident.SVID.ID, audience)
		if err != nil {
			return nil, err
		}
		out = append(out, workload.JWTSVID{ID: ident.SVID.ID, Token: tok})
	}
	if len(out) == 0 {
		return nil, workload.ErrNoIdentity
	}
	return out, nil
}

func (s *Source) mintLocked(id spiffeid.ID, audience []string) (string, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.jwtKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.jwtKID))
	if err != nil {
		return "", fmt.Errorf("jwt signer: %w", err)
	}
	now := time.Now()
	s.jwtMints++
	return jwt.Signed(sig).Claims(jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}).Serialize()
}

type sub struct {
	src  *Source
	sels selector.Set
	ch   chan workload.Update
}

// push replaces an unread update with u: a slow reader sees the latest.
// Callers hold the source's lock.
func (s *sub) push(u workload.Update) {
	select {
	case <-s.ch:
	default:
	}
	s.ch <- u
}

func (s *sub) Updates() <-chan workload.Update { return s.ch }

func (s *sub) Close() {
	s.src.mu.Lock()
	defer s.src.mu.Unlock()
	delete(s.src.subs, s)
}
