package workloadapi

import (
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
)

// MemEntry is one registration entry of a MemSource.
type MemEntry struct {
	ID            string // entry ID
	Selectors     []selector.Selector
	SVID          *x509svid.SVID
	FederatesWith []spiffeid.TrustDomain
}

// MemSource is an in-memory Source for tests: entries with real SVIDs from
// internal/testca, a JWT signing key published in the bundle, and
// subscriptions that get a new Update after every change.
type MemSource struct {
	t  testing.TB
	ca *testca.CA

	mu        sync.Mutex
	entries   map[string]MemEntry
	bundle    *spiffebundle.Bundle
	federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	subs      map[*memSub]struct{}
	jwtKey    crypto.Signer
	jwtKID    string
	jwtMints  int
}

// NewMemSource makes a source for ca's trust domain with a fresh JWT key.
func NewMemSource(t testing.TB, ca *testca.CA) *MemSource {
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
	return &MemSource{
		t: t, ca: ca,
		entries:   map[string]MemEntry{},
		bundle:    b,
		federated: map[spiffeid.TrustDomain]*spiffebundle.Bundle{},
		subs:      map[*memSub]struct{}{},
		jwtKey:    key, jwtKID: kid,
	}
}

// Put adds or replaces an entry, issuing its SVID if it has none.
func (m *MemSource) Put(e MemEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[e.ID] = e
	m.notifyLocked()
}

// Issue makes a fresh SVID for spiffeID.
func (m *MemSource) Issue(spiffeID string) *x509svid.SVID { return m.ca.Issue(m.t, spiffeID) }

// Delete removes an entry.
func (m *MemSource) Delete(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, id)
	m.notifyLocked()
}

// SetFederated sets (or with nil removes) a federated trust domain's bundle.
func (m *MemSource) SetFederated(td spiffeid.TrustDomain, b *spiffebundle.Bundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b == nil {
		delete(m.federated, td)
	} else {
		m.federated[td] = b
	}
	m.notifyLocked()
}

// Bundle returns the own trust domain's bundle.
func (m *MemSource) Bundle() *spiffebundle.Bundle {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bundle
}

// Subscribers counts open subscriptions.
func (m *MemSource) Subscribers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.subs)
}

// JWTMints counts minted JWT-SVIDs.
func (m *MemSource) JWTMints() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jwtMints
}

func (m *MemSource) updateLocked(sels selector.Set) Update {
	u := Update{Bundle: m.bundle, FederatedBundles: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}}
	for _, e := range m.entries {
		if !sels.Superset(e.Selectors) {
			continue
		}
		u.Identities = append(u.Identities, Identity{EntryID: e.ID, SVID: e.SVID})
		for _, td := range e.FederatesWith {
			if b, ok := m.federated[td]; ok {
				u.FederatedBundles[td] = b
			}
		}
	}
	slices.SortFunc(u.Identities, func(a, b Identity) int {
		if a.EntryID < b.EntryID {
			return -1
		}
		if a.EntryID > b.EntryID {
			return 1
		}
		return 0
	})
	return u
}

func (m *MemSource) notifyLocked() {
	for s := range m.subs {
		s.push(m.updateLocked(s.sels))
	}
}

// Subscribe implements Source.
func (m *MemSource) Subscribe(sels selector.Set) Subscription {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &memSub{m: m, sels: sels, ch: make(chan Update, 1)}
	s.push(m.updateLocked(sels))
	m.subs[s] = struct{}{}
	return s
}

// FetchJWTSVID implements Source.
func (m *MemSource) FetchJWTSVID(_ context.Context, sels selector.Set, id spiffeid.ID, audience []string) ([]JWTSVID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []JWTSVID
	for _, ident := range m.updateLocked(sels).Identities {
		if !id.IsZero() && ident.SVID.ID != id {
			continue
		}
		tok, err := m.mintLocked(ident.SVID.ID, audience)
		if err != nil {
			return nil, err
		}
		out = append(out, JWTSVID{ID: ident.SVID.ID, Token: tok})
	}
	if len(out) == 0 {
		return nil, ErrNoIdentity
	}
	return out, nil
}

func (m *MemSource) mintLocked(id spiffeid.ID, audience []string) (string, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: m.jwtKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", m.jwtKID))
	if err != nil {
		return "", fmt.Errorf("jwt signer: %w", err)
	}
	now := time.Now()
	m.jwtMints++
	return jwt.Signed(sig).Claims(jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
	}).Serialize()
}

type memSub struct {
	m    *MemSource
	sels selector.Set
	ch   chan Update
}

// push replaces an unread update with u: a slow reader sees the latest.
func (s *memSub) push(u Update) {
	select {
	case <-s.ch:
	default:
	}
	s.ch <- u
}

func (s *memSub) Updates() <-chan Update { return s.ch }

func (s *memSub) Close() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	delete(s.m.subs, s)
}

var _ Source = (*MemSource)(nil)
