package record

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// CheckEntry validates e and returns a copy with normalized selectors and
// no aliasing of the caller's slices.
func CheckEntry(e store.Entry) (store.Entry, error) {
	if _, err := spiffeid.FromString(e.SPIFFEID); err != nil {
		return e, fmt.Errorf("%w: entry spiffe id %q: %w", store.ErrInvalid, e.SPIFFEID, err)
	}
	if _, err := spiffeid.FromString(e.ParentID); err != nil {
		return e, fmt.Errorf("%w: entry parent id %q: %w", store.ErrInvalid, e.ParentID, err)
	}
	if len(e.Selectors) == 0 {
		return e, fmt.Errorf("%w: entry %s: no selectors", store.ErrInvalid, e.SPIFFEID)
	}
	sels, err := CheckSelectors(e.Selectors)
	if err != nil {
		return e, fmt.Errorf("entry %s: %w", e.SPIFFEID, err)
	}
	e.Selectors = sels
	if e.X509TTL < 0 {
		return e, fmt.Errorf("%w: entry %s: negative x509 ttl %v", store.ErrInvalid, e.SPIFFEID, e.X509TTL)
	}
	if e.JWTTTL < 0 {
		return e, fmt.Errorf("%w: entry %s: negative jwt ttl %v", store.ErrInvalid, e.SPIFFEID, e.JWTTTL)
	}
	for _, n := range e.DNSNames {
		if n == "" || strings.TrimSpace(n) != n {
			return e, fmt.Errorf("%w: entry %s: dns name %q", store.ErrInvalid, e.SPIFFEID, n)
		}
	}
	for _, td := range e.FederatesWith {
		t, err := spiffeid.TrustDomainFromString(td)
		if err != nil || t.Name() != td {
			return e, fmt.Errorf("%w: entry %s: federates with %q: want a trust domain name like example.org", store.ErrInvalid, e.SPIFFEID, td)
		}
	}
	e.DNSNames = EmptyNil(slices.Clone(e.DNSNames))
	e.FederatesWith = EmptyNil(slices.Clone(e.FederatesWith))
	return e, nil
}

// CheckSelectors validates every selector and returns a sorted,
// deduplicated copy (nil when there are none).
func CheckSelectors(in []selector.Selector) ([]selector.Selector, error) {
	if len(in) == 0 {
		return nil, nil
	}
	for _, s := range in {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", store.ErrInvalid, err)
		}
	}
	return selector.Normalize(slices.Clone(in)), nil
}

// DupKey identifies an entry for the duplicate check: its SPIFFE ID, parent
// ID and normalized selector set. It is a hash so that the unique index stays
// small whatever the length of the selectors.
func DupKey(e store.Entry) string {
	h := sha256.New()
	h.Write([]byte(e.SPIFFEID))
	h.Write([]byte{0})
	h.Write([]byte(e.ParentID))
	for _, s := range e.Selectors {
		h.Write([]byte{0})
		h.Write([]byte(s.String()))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func CheckAgent(a store.Agent) (store.Agent, error) {
	if _, err := spiffeid.FromString(a.ID); err != nil {
		return a, fmt.Errorf("%w: agent id %q: %w", store.ErrInvalid, a.ID, err)
	}
	if a.AttestationType == "" {
		return a, fmt.Errorf("%w: agent %s: empty attestation type", store.ErrInvalid, a.ID)
	}
	sels, err := CheckSelectors(a.Selectors)
	if err != nil {
		return a, fmt.Errorf("agent %s: %w", a.ID, err)
	}
	a.Selectors = sels
	a.ExpiresAt = Micro(a.ExpiresAt)
	return a, nil
}

// CheckBundle validates b and returns it with a canonical trust domain name.
func CheckBundle(b store.Bundle) (store.Bundle, error) {
	td, err := CanonicalTD(b.TrustDomain)
	if err != nil {
		return b, err
	}
	b.TrustDomain = td
	if b.RefreshHint < 0 {
		return b, fmt.Errorf("%w: bundle %s: negative refresh hint %v", store.ErrInvalid, td, b.RefreshHint)
	}
	if b.Sequence > math.MaxInt64 {
		return b, fmt.Errorf("%w: bundle %s: sequence %d is above 2^63-1", store.ErrInvalid, td, b.Sequence)
	}
	for i, der := range b.X509Authorities {
		if len(der) == 0 {
			return b, fmt.Errorf("%w: bundle %s: x509 authority %d is empty", store.ErrInvalid, td, i)
		}
	}
	kids := make(map[string]bool, len(b.JWTAuthorities))
	for i, a := range b.JWTAuthorities {
		if a.KeyID == "" || len(a.PublicKey) == 0 {
			return b, fmt.Errorf("%w: bundle %s: jwt authority %d needs a key id and a public key", store.ErrInvalid, td, i)
		}
		if kids[a.KeyID] {
			return b, fmt.Errorf("%w: bundle %s: jwt key id %q appears twice", store.ErrInvalid, td, a.KeyID)
		}
		kids[a.KeyID] = true
	}
	return b, nil
}

// CanonicalTD accepts "example.org" or "spiffe://example.org" and returns
// the name.
func CanonicalTD(s string) (string, error) {
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return "", fmt.Errorf("%w: trust domain %q: %w", store.ErrInvalid, s, err)
	}
	return td.Name(), nil
}

func CheckActor(actor string) error {
	if actor == "" {
		return fmt.Errorf("%w: empty actor", store.ErrInvalid)
	}
	return nil
}

// CheckAudit validates ev and fills its defaults.
func CheckAudit(ev store.AuditEvent, now time.Time) (store.AuditEvent, error) {
	if err := CheckActor(ev.Actor); err != nil {
		return ev, fmt.Errorf("audit event: %w", err)
	}
	if ev.Action == "" {
		return ev, fmt.Errorf("%w: audit event: empty action", store.ErrInvalid)
	}
	if ev.Details == "" {
		ev.Details = "{}"
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(ev.Details), &obj); err != nil || obj == nil {
		return ev, fmt.Errorf("%w: audit event %s: Details are not a JSON object", store.ErrInvalid, ev.Action)
	}
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Time = Micro(ev.Time)
	return ev, nil
}

// TokenTarget names a join token in the audit trail without revealing it.
func TokenTarget(token string) string {
	return "sha256:" + TokenHash(token)
}

// TokenHash is the key under which a join token is kept, so that a copy of
// the database does not hold usable tokens.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Details encodes an audit event's Details; v is always a map or struct of
// plain values, so encoding cannot fail.
func Details(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode audit Details: %v", err))
	}
	return string(b)
}

// Micro is t in UTC at microsecond precision: what the store keeps.
func Micro(t time.Time) time.Time {
	return time.UnixMicro(t.UnixMicro()).UTC()
}

func EmptyNil[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// jwtAuthority is a JWT authority as kept in the bundles table.
type jwtAuthority struct {
	KeyID     string `json:"kid"`
	PublicKey []byte `json:"pub"`
	ExpiresAt int64  `json:"exp"` // unix microseconds
}

func EncodeJWTAuthorities(in []store.JWTAuthority) string {
	out := make([]jwtAuthority, len(in))
	for i, a := range in {
		out[i] = jwtAuthority{KeyID: a.KeyID, PublicKey: a.PublicKey, ExpiresAt: a.ExpiresAt.UnixMicro()}
	}
	return Details(out)
}

func DecodeJWTAuthorities(s string) ([]store.JWTAuthority, error) {
	var in []jwtAuthority
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode jwt authorities: %w", err)
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]store.JWTAuthority, len(in))
	for i, a := range in {
		out[i] = store.JWTAuthority{KeyID: a.KeyID, PublicKey: a.PublicKey, ExpiresAt: time.UnixMicro(a.ExpiresAt).UTC()}
	}
	return out, nil
}

func EncodeX509Authorities(in [][]byte) string { return Details(in) }

func DecodeX509Authorities(s string) ([][]byte, error) {
	var out [][]byte
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decode x509 authorities: %w", err)
	}
	return EmptyNil(out), nil
}

func EncodeStrings(in []string) string {
	if in == nil {
		in = []string{}
	}
	return Details(in)
}

func DecodeStrings(s string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decode string list: %w", err)
	}
	return EmptyNil(out), nil
}

func EncodeSelectors(in []selector.Selector) string {
	if in == nil {
		in = []selector.Selector{}
	}
	return Details(in)
}

func DecodeSelectors(s string) ([]selector.Selector, error) {
	var out []selector.Selector
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decode selectors: %w", err)
	}
	return EmptyNil(out), nil
}
