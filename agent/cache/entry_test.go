package cache

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// An entry keeps what the agent uses and gives it back as a protobuf; a
// reused message carries nothing over from the entry before.
func TestEntryRoundTrip(t *testing.T) {
	full := &typesv1.Entry{Id: "e1", SpiffeId: "spiffe://example.org/db", ParentId: "spiffe://example.org/sigil/agent/x",
		Selectors: []string{"unix:uid:1", "unix:gid:2"}, X509Ttl: durationpb.New(time.Hour), JwtTtl: durationpb.New(time.Minute),
		DnsNames: []string{"db", "db.local"}, FederatesWith: []string{"other.org"}, Admin: true, Revision: 7, CreatedAt: timestamppb.Now()}
	e, err := ParseEntry(full, td)
	if err != nil {
		t.Fatal(err)
	}
	kept := &typesv1.Entry{Id: "e1", SpiffeId: "spiffe://example.org/db", Selectors: []string{"unix:gid:2", "unix:uid:1"}, // sorted
		X509Ttl: durationpb.New(time.Hour), DnsNames: []string{"db", "db.local"}, FederatesWith: []string{"other.org"}}
	if got := e.Proto(); !proto.Equal(got, kept) {
		t.Fatalf("Proto() = %v\nwant %v", got, kept)
	}
	again, err := ParseEntry(e.Proto(), td)
	if err != nil || !reflect.DeepEqual(again, e) {
		t.Fatalf("parse of Proto() = %+v, %v; want %+v", again, err, e)
	}

	bare, err := ParseEntry(&typesv1.Entry{Id: "e2", SpiffeId: "spiffe://example.org/web"}, td)
	if err != nil {
		t.Fatal(err)
	}
	var pb typesv1.Entry
	e.ToProto(&pb)
	bare.ToProto(&pb)
	if want := (&typesv1.Entry{Id: "e2", SpiffeId: "spiffe://example.org/web"}); !proto.Equal(&pb, want) {
		t.Fatalf("reused message = %v, want %v", &pb, want)
	}
	e.ToProto(&pb)
	if !proto.Equal(&pb, kept) {
		t.Fatalf("reused message = %v, want %v", &pb, kept)
	}
}

func TestParseEntryRefuses(t *testing.T) {
	tests := []struct {
		name string
		pb   *typesv1.Entry
		want string
	}{
		{"no id", &typesv1.Entry{SpiffeId: "spiffe://example.org/a"}, "without an id"},
		{"bad spiffe id", &typesv1.Entry{Id: "a", SpiffeId: "http://example.org/a"}, "spiffe id"},
		{"other trust domain", &typesv1.Entry{Id: "a", SpiffeId: "spiffe://other.org/a"}, "not in trust domain"},
		{"bad selector", &typesv1.Entry{Id: "a", SpiffeId: "spiffe://example.org/a", Selectors: []string{"nocolon"}}, "entry a"},
		{"bad federation", &typesv1.Entry{Id: "a", SpiffeId: "spiffe://example.org/a", FederatesWith: []string{"Not A TD"}}, "federates_with"},
		{"bad ttl", &typesv1.Entry{Id: "a", SpiffeId: "spiffe://example.org/a", X509Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}}, "x509 ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseEntry(tt.pb, td); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// An update that changes only what the agent does not keep (parent,
// revision, JWT TTL, flags) changes nothing a workload sees: no Update,
// and the SVID stays; one that changes the X.509 TTL marks it for
// minting again.
func TestUpdateOfUnusedFieldsIsNoChange(t *testing.T) {
	c, s, _ := newTestCache(t, 100)
	a := ent("a", "spiffe://example.org/web", "unix:uid:1000")
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{a}})
	mustMint(t, c)
	sub := c.Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	latest(t, sub)
	v := c.Version()

	b := proto.Clone(a).(*typesv1.Entry)
	b.ParentId, b.Revision, b.JwtTtl, b.Admin = "spiffe://example.org/sigil/agent/y", 2, durationpb.New(time.Minute), true
	mustApply(t, c, &nodev1.SyncResponse{Revision: 2, Entries: []*typesv1.Entry{b}})
	noUpdate(t, sub)
	if c.Version() != v {
		t.Fatal("version bumped by a change the agent does not keep")
	}
	if next := mustMint(t, c); next.IsZero() || s.calls != 1 {
		t.Fatalf("%d signing calls after an unused-field update, want 1", s.calls)
	}

	b.X509Ttl = durationpb.New(10 * time.Minute)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 3, Entries: []*typesv1.Entry{b}})
	mustMint(t, c)
	if s.calls != 2 {
		t.Fatalf("%d signing calls after an X.509 TTL change, want 2", s.calls)
	}
}
