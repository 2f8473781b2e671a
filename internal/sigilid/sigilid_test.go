package sigilid_test

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/sigilid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestCA(t *testing.T) {
	tests := []struct {
		name string
		td   spiffeid.TrustDomain
		want string
	}{
		{name: "trust domain", td: td, want: "spiffe://example.org/sigil/ca"},
		{name: "zero trust domain", td: spiffeid.TrustDomain{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sigilid.CA(tt.td).String(); got != tt.want {
				t.Fatalf("CA = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAgent(t *testing.T) {
	tests := []struct {
		name     string
		td       spiffeid.TrustDomain
		attestor string
		parts    []string
		want     string // empty: an error containing wantErr
		wantErr  string
	}{
		{name: "join token", td: td, attestor: "join_token", parts: []string{"abc.def"}, want: "spiffe://example.org/sigil/agent/join_token/abc.def"},
		{name: "x509pop", td: td, attestor: "x509pop", parts: []string{"00ff"}, want: "spiffe://example.org/sigil/agent/x509pop/00ff"},
		{name: "several parts", td: td, attestor: "k8s_psat", parts: []string{"cluster", "node-1"}, want: "spiffe://example.org/sigil/agent/k8s_psat/cluster/node-1"},
		{name: "attestor only", td: td, attestor: "dev", want: "spiffe://example.org/sigil/agent/dev"},
		{name: "zero trust domain", attestor: "x", parts: []string{"1"}, wantErr: "trust domain is missing"},
		{name: "no attestor", td: td, parts: []string{"1"}, wantErr: "attestor is missing"},
		{name: "slash in part", td: td, attestor: "x", parts: []string{"a/b"}, wantErr: `attestor "x"`},
		{name: "empty part", td: td, attestor: "x", parts: []string{""}, wantErr: "agent id"},
		{name: "dot-dot part", td: td, attestor: "x", parts: []string{".."}, wantErr: "agent id"},
		{name: "space in attestor", td: td, attestor: "a b", parts: []string{"1"}, wantErr: "agent id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sigilid.Agent(tt.td, tt.attestor, tt.parts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !got.IsZero() {
					t.Fatalf("Agent = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("Agent = %q, %v; want %q", got, err, tt.want)
			}
			if !sigilid.IsAgent(got) || !sigilid.IsReserved(got) {
				t.Fatalf("%s: IsAgent %v, IsReserved %v; want both", got, sigilid.IsAgent(got), sigilid.IsReserved(got))
			}
		})
	}
}

func TestIsAgentIsReserved(t *testing.T) {
	tests := []struct {
		id              string
		agent, reserved bool
	}{
		{id: "spiffe://example.org/sigil/agent/join_token/abc", agent: true, reserved: true},
		{id: "spiffe://example.org/sigil/agent/x", agent: true, reserved: true},
		{id: "spiffe://evil.org/sigil/agent/x", agent: true, reserved: true}, // trust domain is the caller's check
		{id: "spiffe://example.org/sigil/agent", agent: false, reserved: true},
		{id: "spiffe://example.org/sigil/ca", agent: false, reserved: true},
		{id: "spiffe://example.org/sigil", agent: false, reserved: true},
		{id: "spiffe://example.org/sigil/other", agent: false, reserved: true},
		{id: "spiffe://example.org/sigilx", agent: false, reserved: false},
		{id: "spiffe://example.org/sigil.agent/x", agent: false, reserved: false},
		{id: "spiffe://example.org/sigil-agent/x", agent: false, reserved: false},
		{id: "spiffe://example.org/sigil/agentx/y", agent: false, reserved: true},
		{id: "spiffe://example.org/web/sigil/agent/x", agent: false, reserved: false},
		{id: "spiffe://example.org/Sigil/ca", agent: false, reserved: false},
		{id: "spiffe://example.org", agent: false, reserved: false},
		{id: "spiffe://sigil/ca", agent: false, reserved: false},
		{id: "spiffe://example.org/web", agent: false, reserved: false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			id := spiffeid.RequireFromString(tt.id)
			if got := sigilid.IsAgent(id); got != tt.agent {
				t.Errorf("IsAgent = %v, want %v", got, tt.agent)
			}
			if got := sigilid.IsReserved(id); got != tt.reserved {
				t.Errorf("IsReserved = %v, want %v", got, tt.reserved)
			}
		})
	}
	if sigilid.IsAgent(spiffeid.ID{}) || sigilid.IsReserved(spiffeid.ID{}) {
		t.Error("the zero ID is an agent or reserved")
	}
	if ca := sigilid.CA(td); !sigilid.IsReserved(ca) || sigilid.IsAgent(ca) {
		t.Errorf("CA %s: reserved %v, agent %v; want reserved and not an agent", ca, sigilid.IsReserved(ca), sigilid.IsAgent(ca))
	}
}

// FuzzID checks, for any ID go-spiffe accepts, that the classification is
// consistent (every agent ID is reserved, reserved means under /sigil), and
// that Agent either refuses its input or makes an agent ID of td that
// survives a round trip through its string form.
func FuzzID(f *testing.F) {
	f.Add("spiffe://example.org/sigil/agent/join_token/abc", "join_token", "abc")
	f.Add("spiffe://example.org/sigil/ca", "x509pop", "00ff")
	f.Add("spiffe://example.org/sigilx/agent", "", "")
	f.Add("spiffe://example.org/sigil", "a/b", "..")
	f.Fuzz(func(t *testing.T, s, attestor, part string) {
		if id, err := spiffeid.FromString(s); err == nil {
			path := id.Path()
			agent, reserved := sigilid.IsAgent(id), sigilid.IsReserved(id)
			if agent && !reserved {
				t.Fatalf("%s is an agent but not reserved", id)
			}
			if reserved != (path == "/sigil" || strings.HasPrefix(path, "/sigil/")) {
				t.Fatalf("%s: reserved = %v", id, reserved)
			}
			if agent != strings.HasPrefix(path, "/sigil/agent/") {
				t.Fatalf("%s: agent = %v", id, agent)
			}
		}
		id, err := sigilid.Agent(td, attestor, part)
		if err != nil {
			if !id.IsZero() {
				t.Fatalf("Agent(%q, %q) = %s and %v", attestor, part, id, err)
			}
			return
		}
		if !sigilid.IsAgent(id) || !id.MemberOf(td) {
			t.Fatalf("Agent(%q, %q) = %s: not an agent of %s", attestor, part, id, td)
		}
		back, err := spiffeid.FromString(id.String())
		if err != nil || back != id {
			t.Fatalf("Agent(%q, %q) = %s does not round-trip: %s, %v", attestor, part, id, back, err)
		}
		if want := "/sigil/agent/" + attestor + "/" + part; id.Path() != want {
			t.Fatalf("Agent(%q, %q) path = %q, want %q", attestor, part, id.Path(), want)
		}
	})
}
