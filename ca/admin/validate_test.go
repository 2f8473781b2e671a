package admin

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca/apiconv"
)

func TestDNSName(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "cart.shop.svc", want: "cart.shop.svc"},
		{in: "Cart.Example.ORG.", want: "cart.example.org"},
		{in: "*.example.org", want: "*.example.org"},
		{in: "localhost", want: "localhost"},
		{in: "", err: "empty"},
		{in: "*", err: "label"},
		{in: "a.*.org", err: "letters"},
		{in: "-a.org", err: "'-'"},
		{in: "a..org", err: "1 to 63"},
		{in: "a_b.org", err: "letters"},
		{in: strings.Repeat("a", 64) + ".org", err: "1 to 63"},
		{in: strings.Repeat("a.", 127) + "ab", err: "253"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := dnsName(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("dnsName(%q) = %q, %v; want error holding %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("dnsName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// FuzzEntryFromProto feeds arbitrary client input to the entry validator:
// it must never panic, and whatever it accepts must be in our trust domain,
// outside the reserved paths, within bounds, and accepted again unchanged.
func FuzzEntryFromProto(f *testing.F) {
	f.Add("spiffe://example.org/a", "spiffe://example.org/p", "unix:uid:1", "a.example.org", "partner.org", int64(3600))
	f.Add("spiffe://example.org/sigil/ca", "spiffe://example.org/p", "k8s:ns:x", "*.x", "example.org", int64(-1))
	f.Add("spiffe://evil.org/a", "spiffe://example.org/p?x", "nocolon", "a_b", "Bad TD", int64(1<<40))
	s, err := New(Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Store: nopStore{}, Authority: &fakeAuthority{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, parent, sel, dns, fed string, ttlSeconds int64) {
		in := &typesv1.Entry{SpiffeId: id, ParentId: parent, Selectors: []string{sel}, DnsNames: []string{dns},
			FederatesWith: []string{fed}, X509Ttl: durationpb.New(time.Duration(ttlSeconds) * time.Second)}
		e, err := s.entryFromProto("entry", in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "rpc error: code = InvalidArgument desc = entry") {
				t.Fatalf("error %v is not an InvalidArgument naming the field", err)
			}
			return
		}
		got := spiffeid.RequireFromString(e.SPIFFEID)
		if !got.MemberOf(s.td) || strings.HasPrefix(got.Path(), "/sigil/") || e.X509TTL < 0 || e.X509TTL > MaxX509TTL || len(e.Selectors) != 1 {
			t.Fatalf("accepted a bad entry %+v", e)
		}
		again, err := s.entryFromProto("entry", apiconv.EntryToProto(e))
		if err != nil {
			t.Fatalf("accepted entry not accepted again: %v", err)
		}
		if again.SPIFFEID != e.SPIFFEID || again.ParentID != e.ParentID || again.X509TTL != e.X509TTL {
			t.Fatalf("validation not idempotent: %+v then %+v", e, again)
		}
	})
}

// nopStore satisfies Store for tests that never reach it.
type nopStore struct{ Store }
