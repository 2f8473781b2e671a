package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// Run runs the conformance suite. open must return a fresh, empty store for
// each call; Run closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"EntryRoundTrip", testEntryRoundTrip},
		{"EntryValidation", testEntryValidation},
		{"CreateEntriesAllOrNone", testCreateEntriesAllOrNone},
		{"UpdateEntry", testUpdateEntry},
		{"DeleteEntry", testDeleteEntry},
		{"UpdateEntries", testUpdateEntries},
		{"DeleteEntries", testDeleteEntries},
		{"Revisions", testRevisions},
		{"EntriesSince", testEntriesSince},
		{"ListEntries", testListEntries},
		{"ConcurrentCreateEntries", testConcurrentCreateEntries},
		{"Agents", testAgents},
		{"JoinTokens", testJoinTokens},
		{"PruneJoinTokens", testPruneJoinTokens},
		{"ConcurrentConsumeJoinToken", testConcurrentConsume},
		{"Bundles", testBundles},
		{"Federations", testFederations},
		{"Journals", testJournals},
		{"RevokedSVIDs", testRevokedSVIDs},
		{"RevokedIDs", testRevokedIDs},
		{"SignedCRLs", testSignedCRLs},
		{"AuditOfMutations", testAuditOfMutations},
		{"AppendListAudit", testAppendListAudit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

const admin = "spiffe://example.org/admin"

// A time with nanoseconds and a zone, to check that stores keep times to the
// microsecond and return them in UTC.
var (
	zone  = time.FixedZone("UTC+5", 5*3600)
	epoch = time.Date(2026, 11, 23, 12, 0, 0, 123456789, zone)
)

func sels(t testing.TB, ss ...string) []selector.Selector {
	t.Helper()
	out := make([]selector.Selector, len(ss))
	for i, s := range ss {
		sel, err := selector.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = sel
	}
	return out
}

func entry(t testing.TB, path, parent string, ss ...string) store.Entry {
	return store.Entry{
		SPIFFEID:  "spiffe://example.org/" + path,
		ParentID:  "spiffe://example.org/sigil/agent/" + parent,
		Selectors: sels(t, ss...),
	}
}

func mustCreate(t *testing.T, s store.Store, es ...store.Entry) []store.Entry {
	t.Helper()
	out, err := s.CreateEntries(t.Context(), admin, es)
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if len(out) != len(es) {
		t.Fatalf("CreateEntries returned %d entries, want %d", len(out), len(es))
	}
	return out
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

func wantRevision(t *testing.T, s store.Store, want int64) {
	t.Helper()
	if got := revision(t, s); got != want {
		t.Fatalf("Revision() = %d, want %d", got, want)
	}
}

func audit(t *testing.T, s store.Store) []store.AuditEvent {
	t.Helper()
	evs, err := s.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	return evs
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want one wrapping %q", what, err, target)
	}
}

func wantEntry(t *testing.T, what string, got, want store.Entry) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func ids(es []store.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	slices.Sort(out)
	return out
}

func sorted(ss []string) []string {
	ss = slices.Clone(ss)
	slices.Sort(ss)
	return ss
}

func testEntryRoundTrip(t *testing.T, s store.Store) {
	wantRevision(t, s, 0)
	in := store.Entry{
		SPIFFEID:      "spiffe://example.org/ns/shop/sa/cart",
		ParentID:      "spiffe://example.org/sigil/agent/join_token/abc",
		Selectors:     sels(t, "unix:uid:1000", "k8s:ns:shop", "unix:uid:1000"),
		X509TTL:       90 * time.Minute,
		JWTTTL:        7 * time.Minute,
		DNSNames:      []string{"cart.shop.svc", "cart"},
		FederatesWith: []string{"partner.example", "other.example"},
		Admin:         true,
		Downstream:    true,
		Revision:      42,         // ignored: set by the store
		CreatedAt:     epoch,      // ignored: set by the store
		ID:            "mine-123", // ignored: assigned by the store
	}
	before := time.Now().UTC().Truncate(time.Microsecond)
	out := mustCreate(t, s, in)
	after := time.Now().UTC()
	got := out[0]
	if got.ID == "" || got.ID == in.ID || url.PathEscape(got.ID) != got.ID {
		t.Fatalf("entry ID %q: want a new URL-safe ID", got.ID)
	}
	if got.Revision != 1 {
		t.Fatalf("Revision = %d, want 1", got.Revision)
	}
	if got.CreatedAt.Location() != time.UTC || got.CreatedAt.Before(before) || got.CreatedAt.After(after) {
		t.Fatalf("CreatedAt = %v, want a UTC time between %v and %v", got.CreatedAt, before, after)
	}
	if got.CreatedAt.Nanosecond()%1000 != 0 {
		t.Fatalf("CreatedAt = %v: returned with more than microsecond precision, the stored value differs", got.CreatedAt)
	}
	want := in
	want.ID, want.Revision, want.CreatedAt = got.ID, 1, got.CreatedAt
	want.Selectors = sels(t, "k8s:ns:shop", "unix:uid:1000")
	wantEntry(t, "CreateEntries", got, want)
	stored, err := s.GetEntry(t.Context(), got.ID)
	if err != nil {
		t.Fatalf("GetEntry: %v", err)
	}
	wantEntry(t, "GetEntry", stored, want)
	wantRevision(t, s, 1)

	// Empty lists come back empty, whatever the store's encoding.
	minimal := mustCreate(t, s, entry(t, "minimal", "a", "unix:uid:1"))[0]
	stored, err = s.GetEntry(t.Context(), minimal.ID)
	if err != nil {
		t.Fatalf("GetEntry: %v", err)
	}
	if len(stored.DNSNames) != 0 || len(stored.FederatesWith) != 0 || stored.Admin || stored.Downstream || stored.X509TTL != 0 {
		t.Fatalf("GetEntry(minimal) = %+v, want zero optional fields", stored)
	}
	_, err = s.GetEntry(t.Context(), "no-such-entry")
	wantErr(t, "GetEntry(unknown)", err, store.ErrNotFound)

	// Two creates never share an ID.
	if minimal.ID == got.ID {
		t.Fatalf("two entries got the same ID %q", got.ID)
	}
}

func testEntryValidation(t *testing.T, s store.Store) {
	good := entry(t, "ok", "a", "unix:uid:1")
	tests := []struct {
		name  string
		actor string
		e     func(e store.Entry) store.Entry
	}{
		{"empty actor", "", func(e store.Entry) store.Entry { return e }},
		{"bad spiffe id", admin, func(e store.Entry) store.Entry { e.SPIFFEID = "https://example.org/x"; return e }},
		{"empty spiffe id", admin, func(e store.Entry) store.Entry { e.SPIFFEID = ""; return e }},
		{"bad parent id", admin, func(e store.Entry) store.Entry { e.ParentID = "agent-1"; return e }},
		{"no selectors", admin, func(e store.Entry) store.Entry { e.Selectors = nil; return e }},
		{"bad selector", admin, func(e store.Entry) store.Entry {
			e.Selectors = []selector.Selector{{Type: "Unix", Value: "uid:1"}}
			return e
		}},
		{"negative x509 ttl", admin, func(e store.Entry) store.Entry { e.X509TTL = -time.Second; return e }},
		{"negative jwt ttl", admin, func(e store.Entry) store.Entry { e.JWTTTL = -time.Second; return e }},
		{"bad federated trust domain", admin, func(e store.Entry) store.Entry { e.FederatesWith = []string{"Not A Domain"}; return e }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateEntries(t.Context(), tt.actor, []store.Entry{good, tt.e(entry(t, "bad", "a", "unix:uid:2"))})
			wantErr(t, "CreateEntries", err, store.ErrInvalid)
			wantRevision(t, s, 0)
			if evs := audit(t, s); len(evs) != 0 {
				t.Fatalf("audit trail holds %d events after a failed create", len(evs))
			}
		})
	}
	stored := mustCreate(t, s, good)[0]
	for _, tt := range tests {
		t.Run("update "+tt.name, func(t *testing.T) {
			e := tt.e(stored)
			_, err := s.UpdateEntry(t.Context(), tt.actor, e)
			wantErr(t, "UpdateEntry", err, store.ErrInvalid)
			wantRevision(t, s, 1)
		})
	}
	_, err := s.UpdateEntry(t.Context(), admin, entry(t, "no-id", "a", "unix:uid:3"))
	if !errors.Is(err, store.ErrInvalid) && !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateEntry(no ID): error = %v, want ErrInvalid or ErrNotFound", err)
	}
	_, err = s.EntriesSince(t.Context(), -1)
	wantErr(t, "EntriesSince(-1)", err, store.ErrInvalid)
}

func testCreateEntriesAllOrNone(t *testing.T, s store.Store) {
	a := entry(t, "a", "node-1", "unix:uid:1", "unix:gid:1")
	// Same SPIFFE ID, parent and selector set, selectors in another order.
	aAgain := entry(t, "a", "node-1", "unix:gid:1", "unix:uid:1")
	b := entry(t, "b", "node-1", "unix:uid:2")

	_, err := s.CreateEntries(t.Context(), admin, []store.Entry{b, a, aAgain})
	wantErr(t, "CreateEntries(duplicate inside the batch)", err, store.ErrDuplicate)
	wantRevision(t, s, 0)

	mustCreate(t, s, a)
	_, err = s.CreateEntries(t.Context(), admin, []store.Entry{b, aAgain})
	wantErr(t, "CreateEntries(duplicate of a stored entry)", err, store.ErrDuplicate)
	wantRevision(t, s, 1)
	all, err := s.ListEntries(t.Context(), store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].SPIFFEID != a.SPIFFEID {
		t.Fatalf("after failed batches the store holds %+v, want only entry a", all)
	}
	if evs := audit(t, s); len(evs) != 1 {
		t.Fatalf("audit trail holds %d events, want 1 (failed batches write none)", len(evs))
	}
	ch, err := s.EntriesSince(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Updated) != 0 || len(ch.Deleted) != 0 || ch.Revision != 1 {
		t.Fatalf("EntriesSince(1) after failed batches = %+v, want nothing at revision 1", ch)
	}

	// Not duplicates: another selector set, another parent, another SPIFFE ID.
	mustCreate(t, s,
		entry(t, "a", "node-1", "unix:uid:1"),
		entry(t, "a", "node-2", "unix:uid:1", "unix:gid:1"),
		entry(t, "a2", "node-1", "unix:uid:1", "unix:gid:1"),
	)
	wantRevision(t, s, 4)

	out, err := s.CreateEntries(t.Context(), admin, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("CreateEntries(nil) = %v, %v; want nothing, no error", out, err)
	}
	wantRevision(t, s, 4)
}

func testUpdateEntry(t *testing.T, s store.Store) {
	created := mustCreate(t, s, entry(t, "a", "node-1", "unix:uid:1"), entry(t, "b", "node-1", "unix:uid:2"))
	e := created[0]

	upd := e
	upd.SPIFFEID = "spiffe://example.org/a-renamed"
	upd.Selectors = sels(t, "unix:uid:5", "unix:gid:5")
	upd.X509TTL = time.Hour
	upd.DNSNames = []string{"a.example"}
	upd.Admin = true
	upd.CreatedAt = epoch // ignored
	got, err := s.UpdateEntry(t.Context(), admin, upd)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	want := upd
	want.Selectors = sels(t, "unix:gid:5", "unix:uid:5")
	want.Revision = 3
	want.CreatedAt = e.CreatedAt
	wantEntry(t, "UpdateEntry", got, want)
	stored, err := s.GetEntry(t.Context(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantEntry(t, "GetEntry after update", stored, want)
	wantRevision(t, s, 3)

	// A stale revision loses.
	stale := upd
	stale.Revision = e.Revision
	stale.JWTTTL = time.Minute
	_, err = s.UpdateEntry(t.Context(), admin, stale)
	wantErr(t, "UpdateEntry(stale revision)", err, store.ErrConflict)
	stored, _ = s.GetEntry(t.Context(), e.ID)
	wantEntry(t, "GetEntry after conflicting update", stored, want)
	wantRevision(t, s, 3)

	// Revision zero skips the check.
	blind := upd
	blind.Revision = 0
	blind.Downstream = true
	got, err = s.UpdateEntry(t.Context(), admin, blind)
	if err != nil {
		t.Fatalf("UpdateEntry(revision 0): %v", err)
	}
	if got.Revision != 4 || !got.Downstream {
		t.Fatalf("UpdateEntry(revision 0) = %+v, want revision 4, downstream", got)
	}

	// Becoming a duplicate of another entry fails.
	dup := created[1]
	dup.ID = e.ID
	dup.Revision = 0
	_, err = s.UpdateEntry(t.Context(), admin, dup)
	wantErr(t, "UpdateEntry(duplicate)", err, store.ErrDuplicate)

	unknown := upd
	unknown.ID, unknown.Revision = "no-such-entry", 0
	_, err = s.UpdateEntry(t.Context(), admin, unknown)
	wantErr(t, "UpdateEntry(unknown)", err, store.ErrNotFound)
	wantRevision(t, s, 4)
	if evs := audit(t, s); len(evs) != 4 {
		t.Fatalf("audit trail holds %d events, want 4 (2 creates, 2 updates)", len(evs))
	}
}

func testDeleteEntry(t *testing.T, s store.Store) {
	e := mustCreate(t, s, entry(t, "a", "node-1", "unix:uid:1"))[0]
	got, err := s.DeleteEntry(t.Context(), admin, e.ID)
	if err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	want := e
	want.Revision = 2 // the revision of the deletion
	wantEntry(t, "DeleteEntry", got, want)
	_, err = s.GetEntry(t.Context(), e.ID)
	wantErr(t, "GetEntry(deleted)", err, store.ErrNotFound)
	_, err = s.DeleteEntry(t.Context(), admin, e.ID)
	wantErr(t, "DeleteEntry(deleted)", err, store.ErrNotFound)
	_, err = s.DeleteEntry(t.Context(), "", e.ID)
	wantErr(t, "DeleteEntry(no actor)", err, store.ErrInvalid)
	wantRevision(t, s, 2)
	// The same entry can be created again once deleted.
	again := mustCreate(t, s, entry(t, "a", "node-1", "unix:uid:1"))[0]
	if again.ID == e.ID || again.Revision != 3 {
		t.Fatalf("re-created entry = %+v, want a new ID at revision 3", again)
	}
}

func testRevisions(t *testing.T, s store.Store) {
	out := mustCreate(t, s, entry(t, "a", "n", "unix:uid:1"), entry(t, "b", "n", "unix:uid:2"), entry(t, "c", "n", "unix:uid:3"))
	for i, e := range out {
		if e.Revision != int64(i+1) {
			t.Fatalf("entry %d of the batch has revision %d, want %d", i, e.Revision, i+1)
		}
		stored, err := s.GetEntry(t.Context(), e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Revision != e.Revision {
			t.Fatalf("GetEntry revision %d, want %d", stored.Revision, e.Revision)
		}
	}
	wantRevision(t, s, 3)
	u, err := s.UpdateEntry(t.Context(), admin, out[0])
	if err != nil {
		t.Fatal(err)
	}
	if u.Revision != 4 {
		t.Fatalf("update revision %d, want 4", u.Revision)
	}
	if _, err := s.DeleteEntry(t.Context(), admin, out[1].ID); err != nil {
		t.Fatal(err)
	}
	wantRevision(t, s, 5)
	// Changes outside entries leave the revision alone.
	if _, err := s.CreateAgent(t.Context(), admin, store.Agent{ID: "spiffe://example.org/sigil/agent/x/1", AttestationType: "x509pop"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBundle(t.Context(), admin, store.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{{1}}}); err != nil {
		t.Fatal(err)
	}
	wantRevision(t, s, 5)
}

func testEntriesSince(t *testing.T, s store.Store) {
	created := mustCreate(t, s, entry(t, "e1", "n", "unix:uid:1"), entry(t, "e2", "n", "unix:uid:2"), entry(t, "e3", "n", "unix:uid:3")) // 1..3
	e1, e2, e3 := created[0], created[1], created[2]
	e2.X509TTL = time.Hour
	e2, err := s.UpdateEntry(t.Context(), admin, e2) // 4
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteEntry(t.Context(), admin, e1.ID); err != nil { // 5
		t.Fatal(err)
	}
	e4 := mustCreate(t, s, entry(t, "e4", "n", "unix:uid:4"))[0] // 6

	tests := []struct {
		rev         int64
		wantUpdated []store.Entry
		wantDeleted []string
	}{
		{0, []store.Entry{e2, e3, e4}, nil},
		{1, []store.Entry{e2, e3, e4}, []string{e1.ID}},
		{3, []store.Entry{e2, e4}, []string{e1.ID}},
		{4, []store.Entry{e4}, []string{e1.ID}},
		{5, []store.Entry{e4}, nil},
		{6, nil, nil},
		{100, nil, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("since %d", tt.rev), func(t *testing.T) {
			ch, err := s.EntriesSince(t.Context(), tt.rev)
			if err != nil {
				t.Fatalf("EntriesSince: %v", err)
			}
			if ch.Revision != 6 {
				t.Fatalf("Revision = %d, want 6", ch.Revision)
			}
			if got, want := ids(ch.Updated), ids(tt.wantUpdated); !slices.Equal(got, want) {
				t.Fatalf("Updated = %v, want %v", got, want)
			}
			for _, u := range ch.Updated {
				for _, w := range tt.wantUpdated {
					if u.ID == w.ID {
						wantEntry(t, "updated entry", u, w)
					}
				}
			}
			if got, want := sorted(ch.Deleted), sorted(tt.wantDeleted); !slices.Equal(got, want) {
				t.Fatalf("Deleted = %v, want %v", got, want)
			}
		})
	}
}

func testListEntries(t *testing.T, s store.Store) {
	created := mustCreate(t, s,
		entry(t, "web", "n1", "unix:uid:1"),
		entry(t, "db", "n1", "unix:uid:2"),
		entry(t, "web", "n2", "unix:uid:1"),
		entry(t, "cache", "n2", "unix:uid:3"),
		entry(t, "web", "n1", "unix:uid:9"),
	)
	byID := func(idx ...int) []string {
		var out []string
		for _, i := range idx {
			out = append(out, created[i].ID)
		}
		slices.Sort(out)
		return out
	}
	p := func(n string) string { return "spiffe://example.org/sigil/agent/" + n }
	id := func(n string) string { return "spiffe://example.org/" + n }
	tests := []struct {
		name string
		f    store.EntryFilter
		want []string
	}{
		{"all", store.EntryFilter{}, byID(0, 1, 2, 3, 4)},
		{"by parent", store.EntryFilter{ParentID: p("n1")}, byID(0, 1, 4)},
		{"by spiffe id", store.EntryFilter{SPIFFEID: id("web")}, byID(0, 2, 4)},
		{"by both", store.EntryFilter{ParentID: p("n2"), SPIFFEID: id("web")}, byID(2)},
		{"no match", store.EntryFilter{ParentID: p("n3")}, nil},
		{"first page", store.EntryFilter{Limit: 2}, byID(0, 1, 2, 3, 4)[:2]},
		{"after", store.EntryFilter{AfterID: byID(0, 1, 2, 3, 4)[1]}, byID(0, 1, 2, 3, 4)[2:]},
		{"after, limited", store.EntryFilter{AfterID: byID(0, 1, 2, 3, 4)[1], Limit: 2}, byID(0, 1, 2, 3, 4)[2:4]},
		{"after the last", store.EntryFilter{AfterID: byID(0, 1, 2, 3, 4)[4]}, nil},
		{"after, by parent", store.EntryFilter{ParentID: p("n1"), AfterID: byID(0, 1, 4)[0], Limit: 1}, byID(0, 1, 4)[1:2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListEntries(t.Context(), tt.f)
			if err != nil {
				t.Fatalf("ListEntries: %v", err)
			}
			gotIDs := make([]string, len(got))
			for i, e := range got {
				gotIDs[i] = e.ID
			}
			// Ordered by ID, not merely the same set.
			if !slices.Equal(gotIDs, tt.want) {
				t.Fatalf("ListEntries(%+v) = %v, want %v", tt.f, gotIDs, tt.want)
			}
			if len(gotIDs) == 0 && tt.want != nil {
				t.Fatalf("ListEntries(%+v) found nothing", tt.f)
			}
			for _, e := range got {
				for _, c := range created {
					if c.ID == e.ID {
						wantEntry(t, "listed entry", e, c)
					}
				}
			}
		})
	}
}

func testConcurrentCreateEntries(t *testing.T, s store.Store) {
	const workers, each = 8, 5
	var (
		mu   sync.Mutex
		revs []int64
		wg   sync.WaitGroup
		errs = make(chan error, workers*each)
	)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := range each {
				out, err := s.CreateEntries(context.Background(), admin, []store.Entry{
					entry(t, fmt.Sprintf("w%d/e%d", w, i), "n", "unix:uid:1"),
				})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				revs = append(revs, out[0].Revision)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent CreateEntries: %v", err)
	}
	slices.Sort(revs)
	for i, r := range revs {
		if r != int64(i+1) {
			t.Fatalf("revisions handed out = %v, want 1..%d each once", revs, workers*each)
		}
	}
	wantRevision(t, s, workers*each)
	evs := audit(t, s)
	if len(evs) != workers*each {
		t.Fatalf("audit trail holds %d events, want %d", len(evs), workers*each)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID {
			t.Fatalf("audit IDs not increasing: %d then %d", evs[i-1].ID, evs[i].ID)
		}
	}
}

func testAgents(t *testing.T, s store.Store) {
	in := store.Agent{
		ID:              "spiffe://example.org/sigil/agent/x509pop/abcd",
		AttestationType: "x509pop",
		Serial:          "0a1b2c",
		ExpiresAt:       epoch,
		Selectors:       sels(t, "x509pop:subject:cn:node-1", "x509pop:ca:fp:00"),
		CreatedAt:       epoch, // ignored
	}
	before := time.Now().UTC().Truncate(time.Microsecond)
	got, err := s.CreateAgent(t.Context(), "ca", in)
	if err != nil {
		t.Fatalf("CreateAgent: %v", err)
	}
	want := in
	want.ExpiresAt = time.Date(2026, 11, 23, 7, 0, 0, 123456000, time.UTC)
	want.Selectors = sels(t, "x509pop:ca:fp:00", "x509pop:subject:cn:node-1")
	want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("CreateAgent:\n got %+v\nwant %+v", got, want)
	}
	if got.CreatedAt.Before(before) || got.CreatedAt.Location() != time.UTC || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Fatalf("CreatedAt %v, UpdatedAt %v: want equal UTC times after %v", got.CreatedAt, got.UpdatedAt, before)
	}
	stored, err := s.GetAgent(t.Context(), in.ID)
	if err != nil {
		t.Fatalf("GetAgent: %v", err)
	}
	if !reflect.DeepEqual(stored, want) {
		t.Fatalf("GetAgent:\n got %+v\nwant %+v", stored, want)
	}
	_, err = s.CreateAgent(t.Context(), "ca", in)
	wantErr(t, "CreateAgent(duplicate)", err, store.ErrDuplicate)

	// Ban.
	ban := stored
	ban.Banned = true
	banned, err := s.UpdateAgent(t.Context(), admin, ban)
	if err != nil {
		t.Fatalf("UpdateAgent: %v", err)
	}
	if !banned.Banned || !banned.CreatedAt.Equal(stored.CreatedAt) || banned.UpdatedAt.Before(stored.UpdatedAt) {
		t.Fatalf("UpdateAgent = %+v: want banned, same CreatedAt, later UpdatedAt", banned)
	}
	stored, _ = s.GetAgent(t.Context(), in.ID)
	if !reflect.DeepEqual(stored, banned) {
		t.Fatalf("GetAgent after ban:\n got %+v\nwant %+v", stored, banned)
	}
	unknown := in
	unknown.ID = "spiffe://example.org/sigil/agent/x509pop/none"
	_, err = s.UpdateAgent(t.Context(), admin, unknown)
	wantErr(t, "UpdateAgent(unknown)", err, store.ErrNotFound)

	// A zero expiry and no selectors round-trip too.
	other, err := s.CreateAgent(t.Context(), "ca", store.Agent{ID: "spiffe://example.org/sigil/agent/join_token/t1", AttestationType: "join_token"})
	if err != nil {
		t.Fatal(err)
	}
	if !other.ExpiresAt.IsZero() || len(other.Selectors) != 0 {
		t.Fatalf("CreateAgent(minimal) = %+v", other)
	}
	list, err := s.ListAgents(t.Context(), store.AgentFilter{})
	if err != nil {
		t.Fatalf("ListAgents: %v", err)
	}
	if len(list) != 2 || list[0].ID != other.ID || list[1].ID != in.ID {
		t.Fatalf("ListAgents = %+v, want the two agents ordered by ID", list)
	}
	for _, tt := range []struct {
		name string
		f    store.AgentFilter
		want []string
	}{
		{"first page", store.AgentFilter{Limit: 1}, []string{other.ID}},
		{"next page", store.AgentFilter{AfterID: other.ID, Limit: 1}, []string{in.ID}},
		{"after the last", store.AgentFilter{AfterID: in.ID}, nil},
	} {
		page, err := s.ListAgents(t.Context(), tt.f)
		if err != nil {
			t.Fatalf("ListAgents(%s): %v", tt.name, err)
		}
		var got []string
		for _, a := range page {
			got = append(got, a.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Fatalf("ListAgents(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
	_, err = s.ListAgents(t.Context(), store.AgentFilter{Limit: -1})
	wantErr(t, "ListAgents(negative limit)", err, store.ErrInvalid)
	_, err = s.ListEntries(t.Context(), store.EntryFilter{Limit: -1})
	wantErr(t, "ListEntries(negative limit)", err, store.ErrInvalid)
	if !list[0].ExpiresAt.IsZero() || len(list[0].Selectors) != 0 {
		t.Fatalf("listed minimal agent = %+v, want zero expiry and no selectors", list[0])
	}

	// Evict.
	if err := s.DeleteAgent(t.Context(), admin, in.ID); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	_, err = s.GetAgent(t.Context(), in.ID)
	wantErr(t, "GetAgent(evicted)", err, store.ErrNotFound)
	wantErr(t, "DeleteAgent(evicted)", s.DeleteAgent(t.Context(), admin, in.ID), store.ErrNotFound)

	for name, a := range map[string]store.Agent{
		"bad id":           {ID: "not-a-spiffe-id", AttestationType: "x509pop"},
		"no attestation":   {ID: "spiffe://example.org/sigil/agent/x/2"},
		"bad selector":     {ID: "spiffe://example.org/sigil/agent/x/3", AttestationType: "x", Selectors: []selector.Selector{{Type: "x"}}},
		"empty actor (id)": {ID: "spiffe://example.org/sigil/agent/x/4", AttestationType: "x"},
	} {
		actor := "ca"
		if strings.HasPrefix(name, "empty actor") {
			actor = ""
		}
		_, err := s.CreateAgent(t.Context(), actor, a)
		wantErr(t, "CreateAgent("+name+")", err, store.ErrInvalid)
	}
}

func testJoinTokens(t *testing.T, s store.Store) {
	now := epoch
	if err := s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: "valid", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	wantErr(t, "CreateJoinToken(duplicate)",
		s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: "valid", ExpiresAt: now.Add(2 * time.Hour)}), store.ErrDuplicate)
	wantErr(t, "CreateJoinToken(empty)",
		s.CreateJoinToken(t.Context(), admin, store.JoinToken{ExpiresAt: now}), store.ErrInvalid)
	wantErr(t, "CreateJoinToken(no expiry)",
		s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: "x"}), store.ErrInvalid)
	wantErr(t, "CreateJoinToken(no actor)",
		s.CreateJoinToken(t.Context(), "", store.JoinToken{Token: "x", ExpiresAt: now}), store.ErrInvalid)

	got, err := s.ConsumeJoinToken(t.Context(), "valid", now)
	if err != nil {
		t.Fatalf("ConsumeJoinToken: %v", err)
	}
	want := store.JoinToken{Token: "valid", ExpiresAt: time.Date(2026, 11, 23, 8, 0, 0, 123456000, time.UTC)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ConsumeJoinToken = %+v, want %+v", got, want)
	}
	_, err = s.ConsumeJoinToken(t.Context(), "valid", now)
	wantErr(t, "ConsumeJoinToken(consumed)", err, store.ErrNotFound)

	// A token that names its agent's SPIFFE ID returns it when consumed.
	named := store.JoinToken{Token: "named", ExpiresAt: micro(now.Add(time.Hour)), SPIFFEID: "spiffe://example.org/node/db-1"}
	if err := s.CreateJoinToken(t.Context(), admin, named); err != nil {
		t.Fatalf("CreateJoinToken(spiffe id): %v", err)
	}
	if got, err := s.ConsumeJoinToken(t.Context(), "named", now); err != nil || !reflect.DeepEqual(got, named) {
		t.Fatalf("ConsumeJoinToken(spiffe id) = %+v, %v, want %+v", got, err, named)
	}
	_, err = s.ConsumeJoinToken(t.Context(), "never-created", now)
	wantErr(t, "ConsumeJoinToken(unknown)", err, store.ErrNotFound)

	// Valid up to and including ExpiresAt; expired after, and then gone.
	if err := s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: "edge", ExpiresAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeJoinToken(t.Context(), "edge", micro(now)); err != nil {
		t.Fatalf("ConsumeJoinToken at ExpiresAt: %v", err)
	}
	if err := s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: "old", ExpiresAt: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ConsumeJoinToken(t.Context(), "old", now)
	wantErr(t, "ConsumeJoinToken(expired)", err, store.ErrExpired)
	_, err = s.ConsumeJoinToken(t.Context(), "old", now.Add(-time.Hour))
	wantErr(t, "ConsumeJoinToken(expired, deleted)", err, store.ErrNotFound)
}

func micro(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()).UTC() }

func testPruneJoinTokens(t *testing.T, s store.Store) {
	now := epoch
	for i, d := range []time.Duration{-time.Hour, -time.Second, -time.Microsecond, 0, time.Hour} {
		if err := s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: fmt.Sprintf("t%d", i), ExpiresAt: now.Add(d)}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneJoinTokens(t.Context(), micro(now))
	if err != nil {
		t.Fatalf("PruneJoinTokens: %v", err)
	}
	if n != 3 {
		t.Fatalf("PruneJoinTokens = %d, want 3", n)
	}
	for _, tok := range []string{"t3", "t4"} {
		if _, err := s.ConsumeJoinToken(t.Context(), tok, micro(now)); err != nil {
			t.Fatalf("ConsumeJoinToken(%s) after prune: %v", tok, err)
		}
	}
	_, err = s.ConsumeJoinToken(t.Context(), "t0", now.Add(-2*time.Hour))
	wantErr(t, "ConsumeJoinToken(pruned)", err, store.ErrNotFound)
	if n, err := s.PruneJoinTokens(t.Context(), now); err != nil || n != 0 {
		t.Fatalf("second PruneJoinTokens = %d, %v; want 0", n, err)
	}
}

func testConcurrentConsume(t *testing.T, s store.Store) {
	const workers = 8
	for round := range 3 {
		tok := fmt.Sprintf("race-%d", round)
		if err := s.CreateJoinToken(t.Context(), admin, store.JoinToken{Token: tok, ExpiresAt: epoch.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, workers)
		)
		for i := range workers {
			wg.Go(func() {
				<-start
				_, errs[i] = s.ConsumeJoinToken(context.Background(), tok, epoch)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrNotFound):
			default:
				t.Fatalf("ConsumeJoinToken: %v, want success or ErrNotFound", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d of %d concurrent consumers got the token, want exactly 1", won, workers)
		}
	}
}

func testBundles(t *testing.T, s store.Store) {
	b1 := store.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: [][]byte{{0x30, 0x82, 0x01, 0x00}, {0x30, 0x01}},
		JWTAuthorities: []store.JWTAuthority{
			{KeyID: "k1", PublicKey: []byte{0x30, 0x59, 1}, ExpiresAt: time.Date(2026, 12, 1, 0, 0, 0, 123456000, time.UTC)},
			{KeyID: "k2", PublicKey: []byte{0x30, 0x59, 2}},
		},
		RefreshHint: 5 * time.Minute,
		Sequence:    7,
	}
	if err := s.SetBundle(t.Context(), "ca", b1); err != nil {
		t.Fatalf("SetBundle: %v", err)
	}
	got, err := s.GetBundle(t.Context(), "example.org")
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	if !reflect.DeepEqual(got, b1) {
		t.Fatalf("GetBundle:\n got %+v\nwant %+v", got, b1)
	}
	// Replace, with a JWT expiry that has nanoseconds and a zone.
	b1v2 := store.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: [][]byte{{0x30, 0x03}},
		JWTAuthorities:  []store.JWTAuthority{{KeyID: "k3", PublicKey: []byte{3}, ExpiresAt: epoch}},
		RefreshHint:     time.Minute,
		Sequence:        1<<63 - 1,
	}
	if err := s.SetBundle(t.Context(), "ca", b1v2); err != nil {
		t.Fatalf("SetBundle(replace): %v", err)
	}
	got, err = s.GetBundle(t.Context(), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	want := b1v2
	want.JWTAuthorities = []store.JWTAuthority{{KeyID: "k3", PublicKey: []byte{3}, ExpiresAt: micro(epoch)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GetBundle after replace:\n got %+v\nwant %+v", got, want)
	}
	b2 := store.Bundle{TrustDomain: "a.partner", X509Authorities: [][]byte{{9}}}
	if err := s.SetBundle(t.Context(), admin, b2); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListBundles(t.Context())
	if err != nil {
		t.Fatalf("ListBundles: %v", err)
	}
	if !reflect.DeepEqual(list, []store.Bundle{b2, want}) {
		t.Fatalf("ListBundles:\n got %+v\nwant %+v", list, []store.Bundle{b2, want})
	}
	if err := s.DeleteBundle(t.Context(), admin, "example.org"); err != nil {
		t.Fatalf("DeleteBundle: %v", err)
	}
	_, err = s.GetBundle(t.Context(), "example.org")
	wantErr(t, "GetBundle(deleted)", err, store.ErrNotFound)
	wantErr(t, "DeleteBundle(deleted)", s.DeleteBundle(t.Context(), admin, "example.org"), store.ErrNotFound)

	for name, b := range map[string]store.Bundle{
		"bad trust domain": {TrustDomain: "Not A Domain"},
		"empty authority":  {TrustDomain: "x.org", X509Authorities: [][]byte{{}}},
		"jwt without kid":  {TrustDomain: "x.org", JWTAuthorities: []store.JWTAuthority{{PublicKey: []byte{1}}}},
		"duplicate kid":    {TrustDomain: "x.org", JWTAuthorities: []store.JWTAuthority{{KeyID: "a", PublicKey: []byte{1}}, {KeyID: "a", PublicKey: []byte{2}}}},
		"sequence too big": {TrustDomain: "x.org", Sequence: 1 << 63},
		"negative refresh": {TrustDomain: "x.org", RefreshHint: -time.Second},
	} {
		wantErr(t, "SetBundle("+name+")", s.SetBundle(t.Context(), admin, b), store.ErrInvalid)
	}
	if _, err := s.GetBundle(t.Context(), "x.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a rejected bundle was stored: %v", err)
	}
}

func testFederations(t *testing.T, s store.Store) {
	spiffe := store.FederationRelationship{TrustDomain: "spire.example", BundleEndpointURL: "https://spire.example:8443/",
		Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://spire.example/spire/server"}
	web := store.FederationRelationship{TrustDomain: "a.partner", BundleEndpointURL: "https://bundle.partner/b",
		Profile: "https_web", WebRootsPEM: []byte("-----BEGIN CERTIFICATE-----")}
	for _, f := range []store.FederationRelationship{spiffe, web} {
		if _, err := s.CreateFederation(t.Context(), admin, f); err != nil {
			t.Fatalf("CreateFederation(%s): %v", f.TrustDomain, err)
		}
	}
	_, err := s.CreateFederation(t.Context(), admin, spiffe)
	wantErr(t, "CreateFederation(again)", err, store.ErrDuplicate)
	got, err := s.GetFederation(t.Context(), "spire.example")
	if err != nil || !reflect.DeepEqual(got, spiffe) {
		t.Fatalf("GetFederation = %+v, %v; want %+v", got, err, spiffe)
	}
	list, err := s.ListFederations(t.Context())
	if err != nil || !reflect.DeepEqual(list, []store.FederationRelationship{web, spiffe}) {
		t.Fatalf("ListFederations = %+v, %v", list, err)
	}
	for name, f := range map[string]store.FederationRelationship{
		"bad trust domain":     {TrustDomain: "Not A Domain", BundleEndpointURL: "https://x/", Profile: "https_web"},
		"http url":             {TrustDomain: "x.org", BundleEndpointURL: "http://x/", Profile: "https_web"},
		"unknown profile":      {TrustDomain: "x.org", BundleEndpointURL: "https://x/", Profile: "ftp"},
		"spiffe without id":    {TrustDomain: "x.org", BundleEndpointURL: "https://x/", Profile: "https_spiffe"},
		"id in another domain": {TrustDomain: "x.org", BundleEndpointURL: "https://x/", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://y.org/s"},
		"web with id":          {TrustDomain: "x.org", BundleEndpointURL: "https://x/", Profile: "https_web", EndpointSPIFFEID: "spiffe://x.org/s"},
	} {
		_, err := s.CreateFederation(t.Context(), admin, f)
		wantErr(t, "CreateFederation("+name+")", err, store.ErrInvalid)
	}
	if err := s.DeleteFederation(t.Context(), admin, "spire.example"); err != nil {
		t.Fatalf("DeleteFederation: %v", err)
	}
	_, err = s.GetFederation(t.Context(), "spire.example")
	wantErr(t, "GetFederation(deleted)", err, store.ErrNotFound)
	wantErr(t, "DeleteFederation(deleted)", s.DeleteFederation(t.Context(), admin, "spire.example"), store.ErrNotFound)
	var actions []string
	for _, ev := range audit(t, s) {
		if strings.HasPrefix(ev.Action, "federation.") {
			actions = append(actions, ev.Action+" "+ev.Target)
		}
	}
	want := []string{"federation.create spire.example", "federation.create a.partner", "federation.delete spire.example"}
	if !reflect.DeepEqual(actions, want) {
		t.Fatalf("audit = %q, want %q", actions, want)
	}
}

func testJournals(t *testing.T, s store.Store) {
	_, err := s.LoadJournal(t.Context(), "ca-1")
	wantErr(t, "LoadJournal(unknown)", err, store.ErrNotFound)
	doc1 := []byte(`{"keys":[{"id":"a"}]}`)
	if err := s.SaveJournal(t.Context(), "ca-1", doc1); err != nil {
		t.Fatalf("SaveJournal: %v", err)
	}
	if err := s.SaveJournal(t.Context(), "ca-2", []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatalf("SaveJournal: %v", err)
	}
	doc1v2 := []byte(`{"keys":[{"id":"a"},{"id":"b"}]}`)
	if err := s.SaveJournal(t.Context(), "ca-1", doc1v2); err != nil {
		t.Fatalf("SaveJournal(overwrite): %v", err)
	}
	for caID, want := range map[string][]byte{"ca-1": doc1v2, "ca-2": {0, 1, 2, 0xff}} {
		got, err := s.LoadJournal(t.Context(), caID)
		if err != nil {
			t.Fatalf("LoadJournal(%s): %v", caID, err)
		}
		if string(got) != string(want) {
			t.Fatalf("LoadJournal(%s) = %q, want %q", caID, got, want)
		}
	}
	wantErr(t, "SaveJournal(empty ca id)", s.SaveJournal(t.Context(), "", doc1), store.ErrInvalid)
}

func testAuditOfMutations(t *testing.T, s store.Store) {
	ctx := t.Context()
	var e store.Entry
	agent := store.Agent{ID: "spiffe://example.org/sigil/agent/join_token/t1", AttestationType: "join_token"}
	steps := []struct {
		action, actor string
		target        string // "" when only checked not to hold the token
		do            func() error
	}{
		{"entry.create", admin, "", func() (err error) {
			out, err := s.CreateEntries(ctx, admin, []store.Entry{entry(t, "a", "n", "unix:uid:1")})
			if err == nil {
				e = out[0]
			}
			return err
		}},
		{"entry.update", "local-admin", "", func() (err error) { e, err = s.UpdateEntry(ctx, "local-admin", e); return err }},
		{"entry.delete", admin, "", func() error { _, err := s.DeleteEntry(ctx, admin, e.ID); return err }},
		{"agent.create", "ca", agent.ID, func() error { _, err := s.CreateAgent(ctx, "ca", agent); return err }},
		{"agent.update", admin, agent.ID, func() error { a := agent; a.Banned = true; _, err := s.UpdateAgent(ctx, admin, a); return err }},
		{"agent.evict", admin, agent.ID, func() error { return s.DeleteAgent(ctx, admin, agent.ID) }},
		{"token.create", admin, "", func() error {
			return s.CreateJoinToken(ctx, admin, store.JoinToken{Token: "s3cret-token", ExpiresAt: epoch})
		}},
		{"token.consume", "", "", func() error { _, err := s.ConsumeJoinToken(ctx, "s3cret-token", epoch); return err }},
		{"bundle.set", "ca", "example.org", func() error {
			return s.SetBundle(ctx, "ca", store.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{{1}}})
		}},
		{"bundle.delete", admin, "example.org", func() error { return s.DeleteBundle(ctx, admin, "example.org") }},
	}
	var lastID int64
	for _, st := range steps {
		before := time.Now().UTC().Truncate(time.Microsecond)
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.action, err)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{AfterID: lastID})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("%s wrote %d audit events, want 1: %+v", st.action, len(evs), evs)
		}
		ev := evs[0]
		target := st.target
		if strings.HasPrefix(st.action, "entry.") {
			target = e.ID
		}
		switch {
		case ev.ID <= lastID:
			t.Fatalf("%s: audit ID %d not above %d", st.action, ev.ID, lastID)
		case ev.Action != st.action:
			t.Fatalf("audit action %q, want %q", ev.Action, st.action)
		case st.actor != "" && ev.Actor != st.actor, ev.Actor == "":
			t.Fatalf("%s: audit actor %q, want %q", st.action, ev.Actor, st.actor)
		case target != "" && ev.Target != target, ev.Target == "":
			t.Fatalf("%s: audit target %q, want %q", st.action, ev.Target, target)
		case strings.Contains(ev.Target+ev.Details, "s3cret"):
			t.Fatalf("%s: audit event %+v holds the join token", st.action, ev)
		case ev.Time.Location() != time.UTC || ev.Time.Before(before):
			t.Fatalf("%s: audit time %v, want UTC, not before %v", st.action, ev.Time, before)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(ev.Details), &obj); err != nil || obj == nil {
			t.Fatalf("%s: details %q are not a JSON object", st.action, ev.Details)
		}
		lastID = ev.ID
	}
	// Failed mutations write nothing.
	_, _ = s.DeleteEntry(ctx, admin, "no-such-entry")
	_ = s.DeleteAgent(ctx, admin, agent.ID)
	_, _ = s.ConsumeJoinToken(ctx, "s3cret-token", epoch)
	_ = s.DeleteBundle(ctx, admin, "example.org")
	if evs, _ := s.ListAudit(ctx, store.AuditFilter{AfterID: lastID}); len(evs) != 0 {
		t.Fatalf("failed mutations wrote audit events: %+v", evs)
	}
}

func testAppendListAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.AppendAudit(ctx, store.AuditEvent{
		ID: 999, Time: epoch, Actor: "ca", Action: "svid.sign", Target: "spiffe://example.org/web", Details: `{"serial":"01"}`,
	})
	if err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	want := store.AuditEvent{ID: got.ID, Time: micro(epoch), Actor: "ca", Action: "svid.sign", Target: "spiffe://example.org/web", Details: `{"serial":"01"}`}
	if got != want || got.ID <= 0 {
		t.Fatalf("AppendAudit = %+v, want %+v with a store-assigned ID", got, want)
	}
	before := time.Now().UTC().Truncate(time.Microsecond)
	noTime, err := s.AppendAudit(ctx, store.AuditEvent{Actor: "ca", Action: "jwt.mint", Target: "x"})
	if err != nil {
		t.Fatalf("AppendAudit(no time): %v", err)
	}
	if noTime.Time.Before(before) || noTime.Time.Location() != time.UTC || noTime.ID <= got.ID {
		t.Fatalf("AppendAudit(no time) = %+v: want the store's time and a higher ID", noTime)
	}
	for name, ev := range map[string]store.AuditEvent{
		"no actor":         {Action: "svid.sign"},
		"no action":        {Actor: "ca"},
		"details not json": {Actor: "ca", Action: "svid.sign", Details: "serial=01"},
		"details an array": {Actor: "ca", Action: "svid.sign", Details: "[1]"},
	} {
		_, err := s.AppendAudit(ctx, ev)
		wantErr(t, "AppendAudit("+name+")", err, store.ErrInvalid)
	}
	for i := range 8 {
		if _, err := s.AppendAudit(ctx, store.AuditEvent{Actor: "ca", Action: "svid.sign", Target: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	all := audit(t, s)
	if len(all) != 10 || all[0] != want || all[1] != noTime {
		t.Fatalf("ListAudit = %+v, want 10 events starting with the two appended", all)
	}
	for _, limit := range []int{1, 3, 10, 11} {
		var paged []store.AuditEvent
		after := int64(0)
		for {
			page, err := s.ListAudit(ctx, store.AuditFilter{AfterID: after, Limit: limit})
			if err != nil {
				t.Fatalf("ListAudit: %v", err)
			}
			if len(page) > limit {
				t.Fatalf("ListAudit(limit %d) returned %d events", limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1].ID
		}
		if !reflect.DeepEqual(paged, all) {
			t.Fatalf("paging by %d:\n got %+v\nwant %+v", limit, paged, all)
		}
	}
	_, err = s.ListAudit(ctx, store.AuditFilter{Limit: -1})
	wantErr(t, "ListAudit(negative limit)", err, store.ErrInvalid)
}

func testSignedCRLs(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := micro(time.Now())
	for name, bad := range map[string][]store.SignedCRL{
		"no key id":     {{DER: []byte{1}, NextUpdate: now.Add(time.Hour)}},
		"no DER":        {{KeyID: "k", NextUpdate: now.Add(time.Hour)}},
		"no nextUpdate": {{KeyID: "k", DER: []byte{1}}},
		"too many":      make([]store.SignedCRL, store.MaxSignedCRLs+1),
	} {
		wantErr(t, "put crls, "+name, s.PutCRLs(ctx, "a", bad, now), store.ErrInvalid)
	}
	wantErr(t, "put crls without ca id", s.PutCRLs(ctx, "", nil, now), store.ErrInvalid)
	a1 := store.SignedCRL{CAID: "a", KeyID: "a1", DER: []byte("crl a1"), NextUpdate: now.Add(time.Hour)}
	a2 := store.SignedCRL{CAID: "a", KeyID: "a2", DER: []byte("crl a2"), NextUpdate: now.Add(time.Minute)}
	b1 := store.SignedCRL{CAID: "b", KeyID: "b1", DER: []byte("crl b1"), NextUpdate: now.Add(time.Hour)}
	if err := s.PutCRLs(ctx, "a", []store.SignedCRL{a1, a2}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCRLs(ctx, "b", []store.SignedCRL{b1}, now); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListCRLs(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []store.SignedCRL{a1, a2, b1}) {
		t.Fatalf("crls = %+v, want a1, a2, b1", got)
	}
	// Stale ones are not listed; a put replaces the replica's set and
	// deletes every stale one.
	later := now.Add(30 * time.Minute)
	if got, _ := s.ListCRLs(ctx, later); len(got) != 2 {
		t.Fatalf("crls at +30m = %+v, want a1 and b1", got)
	}
	if err := s.PutCRLs(ctx, "b", nil, later); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListCRLs(ctx, now); !reflect.DeepEqual(got, []store.SignedCRL{a1}) {
		t.Fatalf("crls after b put none at +30m = %+v, want a1 (a2 stale, deleted)", got)
	}
}

func testRevokedSVIDs(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := micro(time.Now())
	// Bad input writes nothing.
	for _, bad := range []store.RevokedSVID{
		{Serial: "", NotAfter: now.Add(time.Hour)},
		{Serial: "xyz", NotAfter: now.Add(time.Hour)},
		{Serial: "-1", NotAfter: now.Add(time.Hour)},
		{Serial: "0", NotAfter: now.Add(time.Hour)},
		{Serial: "ab"},
	} {
		wantErr(t, fmt.Sprintf("revoke %+v", bad), s.RevokeSVID(ctx, "admin", bad, now, 10), store.ErrInvalid)
	}
	wantErr(t, "revoke without actor", s.RevokeSVID(ctx, "", store.RevokedSVID{Serial: "ab", NotAfter: now.Add(time.Hour)}, now, 10), store.ErrInvalid)
	if got, err := s.ListRevokedSVIDs(ctx, now); err != nil || len(got) != 0 {
		t.Fatalf("after bad input: %v, %v; want nothing", got, err)
	}

	// Serials are normalized: leading zeros and case do not make a second record.
	if err := s.RevokeSVID(ctx, "admin", store.RevokedSVID{Serial: "00AB", SPIFFEID: "spiffe://example.org/a", NotAfter: now.Add(time.Hour)}, now, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSVID(ctx, "admin", store.RevokedSVID{Serial: "ab", NotAfter: now.Add(2 * time.Hour)}, now, 2); err != nil {
		t.Fatalf("revoke again (a later notAfter is kept): %v", err)
	}
	if err := s.RevokeSVID(ctx, "admin", store.RevokedSVID{Serial: "ab", NotAfter: now.Add(time.Minute)}, now, 2); err != nil {
		t.Fatalf("revoke again (an earlier notAfter is ignored): %v", err)
	}
	if err := s.RevokeSVID(ctx, "admin", store.RevokedSVID{Serial: "cd", NotAfter: now.Add(time.Minute)}, now, 2); err != nil {
		t.Fatal(err)
	}
	// Bounded: a third unexpired serial is refused at limit 2.
	wantErr(t, "revoke over the limit", s.RevokeSVID(ctx, "admin", store.RevokedSVID{Serial: "ef", NotAfter: now.Add(time.Minute)}, now, 2), store.ErrLimit)
	got, err := s.ListRevokedSVIDs(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Serial != "ab" || got[1].Serial != "cd" {
		t.Fatalf("revoked = %+v, want ab and cd", got)
	}
	if !got[0].NotAfter.Equal(now.Add(2*time.Hour)) || got[0].SPIFFEID != "spiffe://example.org/a" || got[0].RevokedAt.IsZero() {
		t.Fatalf("revoked ab = %+v, want notAfter %v, its SPIFFE ID and a revocation time", got[0], now.Add(2*time.Hour))
	}
	// Expired ones are not listed, do not count against the limit, and are pruned.
	later := now.Add(30 * time.Minute)
	if got, _ := s.ListRevokedSVIDs(ctx, later); len(got) != 1 || got[0].Serial != "ab" {
		t.Fatalf("revoked at +30m = %+v, want only ab", got)
	}
	if err := s.RevokeSVID(ctx, "admin", store.RevokedSVID{Serial: "ef", NotAfter: later.Add(time.Minute)}, later, 2); err != nil {
		t.Fatalf("revoke once cd expired: %v", err)
	}
	n, err := s.PruneRevokedSVIDs(ctx, later)
	if err != nil || n != 1 {
		t.Fatalf("prune = %d, %v; want 1 (cd)", n, err)
	}
	var revokes int
	for _, ev := range audit(t, s) {
		if ev.Action == "svid.revoke" {
			revokes++
		}
	}
	if revokes != 5 {
		t.Fatalf("%d svid.revoke audit events, want 5", revokes)
	}
}

func testRevokedIDs(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := micro(time.Now())
	a, b := "spiffe://example.org/a", "spiffe://example.org/b"
	for _, bad := range []store.RevokedID{{SPIFFEID: "", NotAfter: now.Add(time.Hour)}, {SPIFFEID: "x", NotAfter: now.Add(time.Hour)}, {SPIFFEID: a}} {
		wantErr(t, fmt.Sprintf("revoke id %+v", bad), s.RevokeSPIFFEID(ctx, "admin", bad, now, 10), store.ErrInvalid)
	}
	wantErr(t, "revoke id without actor", s.RevokeSPIFFEID(ctx, "", store.RevokedID{SPIFFEID: a, NotAfter: now.Add(time.Hour)}, now, 10), store.ErrInvalid)
	if err := s.RevokeSPIFFEID(ctx, "admin", store.RevokedID{SPIFFEID: a, NotAfter: now.Add(time.Hour)}, now, 1); err != nil {
		t.Fatal(err)
	}
	first, err := s.ListRevokedIDs(ctx, now)
	if err != nil || len(first) != 1 || first[0].SPIFFEID != a || first[0].RevokedAt.IsZero() || !first[0].NotAfter.Equal(now.Add(time.Hour)) {
		t.Fatalf("revoked ids = %+v, %v; want %s with a time", first, err, a)
	}
	// Again: the time moves on, an earlier notAfter is ignored, and the
	// same ID does not count against the limit.
	time.Sleep(2 * time.Millisecond)
	if err := s.RevokeSPIFFEID(ctx, "admin", store.RevokedID{SPIFFEID: a, NotAfter: now.Add(time.Minute)}, now, 1); err != nil {
		t.Fatalf("revoke again: %v", err)
	}
	again, _ := s.ListRevokedIDs(ctx, now)
	if len(again) != 1 || !again[0].RevokedAt.After(first[0].RevokedAt) || !again[0].NotAfter.Equal(now.Add(time.Hour)) {
		t.Fatalf("after revoking again: %+v, want a later time and notAfter %v", again, now.Add(time.Hour))
	}
	wantErr(t, "revoke id over the limit", s.RevokeSPIFFEID(ctx, "admin", store.RevokedID{SPIFFEID: b, NotAfter: now.Add(time.Minute)}, now, 1), store.ErrLimit)
	later := now.Add(2 * time.Hour)
	if got, _ := s.ListRevokedIDs(ctx, later); len(got) != 0 {
		t.Fatalf("expired id revocations listed: %+v", got)
	}
	if n, err := s.PruneRevokedSVIDs(ctx, later); err != nil || n < 1 {
		t.Fatalf("prune = %d, %v; want the id revocation pruned", n, err)
	}
	var events int
	for _, ev := range audit(t, s) {
		if ev.Action == "svid.revoke_id" && ev.Target == a {
			events++
		}
	}
	if events != 2 {
		t.Fatalf("%d svid.revoke_id audit events, want 2", events)
	}
}
