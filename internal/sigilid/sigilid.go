package sigilid

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Reserved is the path under which every ID Sigil hands out to itself lives:
// the CA is Reserved+"/ca", agents are Reserved+"/agent/<attestor>/...".
// It is exported for messages; test IDs with IsReserved and IsAgent.
const Reserved = "/sigil"

const agentPath = Reserved + "/agent"

// CA is the CA's own ID, spiffe://<td>/sigil/ca, or the zero ID when td is
// the zero trust domain.
func CA(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromSegments(td, "sigil", "ca")
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// Agent is the ID of an agent attested by attestor:
// spiffe://<td>/sigil/agent/<attestor>/<parts...>. Each part is one path
// segment and must be a valid one (letters, digits, '.', '-', '_').
func Agent(td spiffeid.TrustDomain, attestor string, parts ...string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errors.New("agent id: trust domain is missing")
	}
	if attestor == "" {
		return spiffeid.ID{}, errors.New("agent id: attestor is missing")
	}
	segs := append([]string{"sigil", "agent", attestor}, parts...)
	id, err := spiffeid.FromSegments(td, segs...)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent id for attestor %q: %w", attestor, err)
	}
	return id, nil
}

// IsAgent reports whether id has an agent's path, /sigil/agent/<...>, in any
// trust domain; callers check the trust domain with id.MemberOf.
func IsAgent(id spiffeid.ID) bool {
	return under(id.Path(), agentPath) && id.Path() != agentPath
}

// IsReserved reports whether id is one of Sigil's own identities (the CA,
// the agents, or anything else under /sigil), in any trust domain. No
// registration entry may hand out such an ID.
func IsReserved(id spiffeid.ID) bool {
	return under(id.Path(), Reserved)
}

// under reports whether path is dir or below it. Both are valid SPIFFE ID
// paths (go-spiffe validated them), so segment boundaries are '/'.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
