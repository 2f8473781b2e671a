package admin

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// Bounds on what one entry may hold, so that a hostile or mistaken caller
// cannot make the store or every agent carry huge records.
const (
	maxSelectors     = 64
	maxDNSNames      = 100
	maxFederatesWith = 100
	maxIDLen         = 2048
	maxEntryIDLen    = 128
)

// entryFromProto validates e and converts it. prefix names e in messages
// ("entries[2]" or "entry").
func (s *Server) entryFromProto(prefix string, e *typesv1.Entry) (store.Entry, error) {
	if e == nil {
		return store.Entry{}, invalid(prefix, "missing")
	}
	var out store.Entry
	id, err := s.memberID(prefix+".spiffe_id", e.GetSpiffeId())
	if err != nil {
		return store.Entry{}, err
	}
	if sigilid.IsReserved(id) {
		return store.Entry{}, invalid(prefix+".spiffe_id", "%s is reserved for Sigil's own identities (paths under %s/)", id, sigilid.Reserved)
	}
	out.SPIFFEID = id.String()

	parent, err := s.memberID(prefix+".parent_id", e.GetParentId())
	if err != nil {
		return store.Entry{}, err
	}
	if parent == id {
		return store.Entry{}, invalid(prefix+".parent_id", "an entry cannot be its own parent")
	}
	out.ParentID = parent.String()

	if len(e.GetSelectors()) == 0 {
		return store.Entry{}, invalid(prefix+".selectors", "at least one selector is required (e.g. unix:uid:1000)")
	}
	if len(e.GetSelectors()) > maxSelectors {
		return store.Entry{}, invalid(prefix+".selectors", "at most %d selectors", maxSelectors)
	}
	// A node-alias entry (parent: the CA) is matched against the node
	// selectors of agents; any other against a workload's.
	kind := selector.KindWorkload
	if parent == sigilid.CA(s.td) {
		kind = selector.KindNode
	}
	for i, raw := range e.GetSelectors() {
		sel, err := selector.Parse(raw)
		if err == nil {
			err = s.sels.Check(kind, sel)
		}
		if err != nil {
			return store.Entry{}, invalid(fmt.Sprintf("%s.selectors[%d]", prefix, i), "%v", err)
		}
		out.Selectors = append(out.Selectors, sel)
	}
	out.Selectors = selector.Normalize(out.Selectors)

	if out.X509TTL, err = ttl(prefix+".x509_ttl", e.GetX509Ttl(), MaxX509TTL); err != nil {
		return store.Entry{}, err
	}
	if out.JWTTTL, err = ttl(prefix+".jwt_ttl", e.GetJwtTtl(), MaxJWTTTL); err != nil {
		return store.Entry{}, err
	}

	if len(e.GetDnsNames()) > maxDNSNames {
		return store.Entry{}, invalid(prefix+".dns_names", "at most %d names", maxDNSNames)
	}
	for i, name := range e.GetDnsNames() {
		n, err := dnsName(name)
		if err != nil {
			return store.Entry{}, invalid(fmt.Sprintf("%s.dns_names[%d]", prefix, i), "%v", err)
		}
		if !contains(out.DNSNames, n) {
			out.DNSNames = append(out.DNSNames, n)
		}
	}

	if len(e.GetFederatesWith()) > maxFederatesWith {
		return store.Entry{}, invalid(prefix+".federates_with", "at most %d trust domains", maxFederatesWith)
	}
	for i, raw := range e.GetFederatesWith() {
		field := fmt.Sprintf("%s.federates_with[%d]", prefix, i)
		td, err := spiffeid.TrustDomainFromString(raw)
		if err != nil {
			return store.Entry{}, invalid(field, "%q is not a trust domain: %v", raw, err)
		}
		if td == s.td {
			return store.Entry{}, invalid(field, "%s is our own trust domain", td)
		}
		if !contains(out.FederatesWith, td.Name()) {
			out.FederatesWith = append(out.FederatesWith, td.Name())
		}
	}
	out.Admin = e.GetAdmin()
	out.Downstream = e.GetDownstream()
	out.ID = e.GetId()
	out.Revision = e.GetRevision()
	return out, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// memberID parses a SPIFFE ID that must name a workload or agent of our
// trust domain.
func (s *Server) memberID(field, raw string) (spiffeid.ID, error) {
	if raw == "" {
		return spiffeid.ID{}, invalid(field, "required")
	}
	if len(raw) > maxIDLen {
		return spiffeid.ID{}, invalid(field, "longer than %d bytes", maxIDLen)
	}
	id, err := spiffeid.FromString(raw)
	if err != nil {
		return spiffeid.ID{}, invalid(field, "%q is not a SPIFFE ID: %v", raw, err)
	}
	if !id.MemberOf(s.td) {
		return spiffeid.ID{}, invalid(field, "%s is not in trust domain %s", id, s.td)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, invalid(field, "%s names the trust domain itself; a path is required", id)
	}
	return id, nil
}

// ttl reads an optional duration in [0, max].
func ttl(field string, d *durationpb.Duration, max time.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid(field, "%v", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, invalid(field, "%s is negative", v)
	}
	if v > max {
		return 0, invalid(field, "%s is longer than the maximum %s", v, max)
	}
	return v, nil
}

// dnsName checks an RFC 1123 host name, allowing a wildcard as the whole
// leftmost label, and returns it in lower case.
func dnsName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty name")
	}
	if len(name) > 253 {
		return "", fmt.Errorf("longer than 253 bytes")
	}
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	labels := strings.Split(n, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 1 {
			continue
		}
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("%q: each label must hold 1 to 63 characters", name)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%q: a label may not begin or end with '-'", name)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return "", fmt.Errorf("%q: labels may hold only letters, digits and '-'", name)
			}
		}
	}
	return n, nil
}

// trustDomain parses a trust domain name (or spiffe://name).
func trustDomain(field, raw string) (spiffeid.TrustDomain, error) {
	if raw == "" {
		return spiffeid.TrustDomain{}, invalid(field, "required")
	}
	td, err := spiffeid.TrustDomainFromString(raw)
	if err != nil {
		return spiffeid.TrustDomain{}, invalid(field, "%q is not a trust domain: %v", raw, err)
	}
	return td, nil
}

// entryID checks an entry ID given by a client.
func entryID(field, id string) error {
	if id == "" {
		return invalid(field, "required")
	}
	if len(id) > maxEntryIDLen {
		return invalid(field, "longer than %d bytes", maxEntryIDLen)
	}
	return nil
}
