package apiconv

import (
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestEntryAndBundle(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	e := EntryToProto(store.Entry{ID: "1", SPIFFEID: "spiffe://td/a", ParentID: "spiffe://td/p",
		Selectors: []selector.Selector{{Type: "unix", Value: "uid:1"}}, X509TTL: time.Hour, CreatedAt: now, Revision: 7, Admin: true})
	if e.GetSelectors()[0] != "unix:uid:1" || e.GetX509Ttl().AsDuration() != time.Hour || e.GetJwtTtl() != nil ||
		!e.GetCreatedAt().AsTime().Equal(now) || e.GetRevision() != 7 || !e.GetAdmin() {
		t.Fatalf("entry: %v", e)
	}
	b := BundleToProto(store.Bundle{TrustDomain: "td", Sequence: 3, JWTAuthorities: []store.JWTAuthority{{KeyID: "k", ExpiresAt: now}}})
	if b.GetSequence() != 3 || b.GetRefreshHint() != nil || b.GetJwtAuthorities()[0].GetKeyId() != "k" {
		t.Fatalf("bundle: %v", b)
	}
	if TimeOrNil(time.Time{}) != nil || DurationOrNil(0) != nil {
		t.Fatal("zero values must stay unset")
	}
}
