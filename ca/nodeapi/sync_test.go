package nodeapi_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/nodeapi"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// patience bounds every wait for a push; the contract is one second, the
// margin is for loaded test machines (never a timing assertion).
const patience = 5 * time.Second

type syncStream struct {
	ch   chan *nodev1.SyncResponse
	errc chan error
}

func (e *env) openSync(t *testing.T, a *agent, rev int64) *syncStream {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	t.Cleanup(cancel)
	stream, err := a.client.Sync(ctx, &nodev1.SyncRequest{Revision: rev})
	if err != nil {
		t.Fatal(err)
	}
	s := &syncStream{ch: make(chan *nodev1.SyncResponse, 64), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			select {
			case s.ch <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// waitFor returns the first response for which ok holds.
func (s *syncStream) waitFor(t *testing.T, what string, ok func(*nodev1.SyncResponse) bool) *nodev1.SyncResponse {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case r := <-s.ch:
			if ok(r) {
				return r
			}
		case err := <-s.errc:
			t.Fatalf("waiting for %s: stream ended: %v", what, err)
		case <-deadline:
			t.Fatalf("no sync response with %s within %s", what, patience)
		}
	}
}

func (s *syncStream) end(t *testing.T) error {
	t.Helper()
	for {
		select {
		case <-s.ch:
		case err := <-s.errc:
			return err
		case <-time.After(patience):
			t.Fatalf("stream still open after %s", patience)
		}
	}
}

func entryIDs(r *nodev1.SyncResponse) []string {
	var ids []string
	for _, e := range r.GetEntries() {
		ids = append(ids, e.GetId())
	}
	slices.Sort(ids)
	return ids
}

func hasEntry(id string) func(*nodev1.SyncResponse) bool {
	return func(r *nodev1.SyncResponse) bool { return slices.Contains(entryIDs(r), id) }
}

func deletes(id string) func(*nodev1.SyncResponse) bool {
	return func(r *nodev1.SyncResponse) bool { return slices.Contains(r.GetDeletedEntryIds(), id) }
}

func TestSyncPushesChanges(t *testing.T) {
	e := newEnv(t)
	a, b := e.joinAgent(t), e.joinAgent(t)
	e1 := e.entry(t, "spiffe://example.org/one", a.id)
	other := e.entry(t, "spiffe://example.org/b-only", b.id)
	s := e.openSync(t, a, 0)

	first := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	if !first.GetFull() || !slices.Equal(entryIDs(first), []string{e1.ID}) || len(first.GetDeletedEntryIds()) != 0 {
		t.Fatalf("first response: full=%v entries=%v deleted=%v, want full with only %s", first.GetFull(), entryIDs(first), first.GetDeletedEntryIds(), e1.ID)
	}
	if len(first.GetBundles()) != 1 || first.GetBundles()[0].GetTrustDomain() != "example.org" || first.GetRevision() == 0 {
		t.Fatalf("first response bundles %v revision %d", first.GetBundles(), first.GetRevision())
	}

	t.Run("created entry", func(t *testing.T) {
		e2 := e.entry(t, "spiffe://example.org/two", a.id)
		r := s.waitFor(t, "the new entry", hasEntry(e2.ID))
		if r.GetFull() || slices.Contains(entryIDs(r), other.ID) {
			t.Fatalf("incremental push: full=%v entries=%v", r.GetFull(), entryIDs(r))
		}
	})
	t.Run("other agent's entry is never pushed", func(t *testing.T) {
		theirs := e.entry(t, "spiffe://example.org/b-two", b.id)
		marker := e.entry(t, "spiffe://example.org/marker", a.id)
		r := s.waitFor(t, "the marker entry", hasEntry(marker.ID))
		if slices.Contains(entryIDs(r), theirs.ID) {
			t.Fatalf("agent a was sent agent b's entry %s", theirs.ID)
		}
	})
	t.Run("deleted entry", func(t *testing.T) {
		if _, err := e.store.DeleteEntry(e.ctx, "test", e1.ID); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, "the deletion of "+e1.ID, deletes(e1.ID))
	})
	t.Run("de-authorized entry", func(t *testing.T) {
		moved := e.entry(t, "spiffe://example.org/moving", a.id)
		s.waitFor(t, "the entry to move", hasEntry(moved.ID))
		moved.ParentID = b.id
		moved.Revision = 0
		if _, err := e.store.UpdateEntry(e.ctx, "test", moved); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, "the moved entry reported deleted", deletes(moved.ID))
	})
	t.Run("bundle change", func(t *testing.T) {
		if err := e.store.SetBundle(e.ctx, "test", store.Bundle{TrustDomain: "partner.org", X509Authorities: [][]byte{e.pki.Roots()[0].Raw}}); err != nil {
			t.Fatal(err)
		}
		r := s.waitFor(t, "the partner bundle", func(r *nodev1.SyncResponse) bool { return len(r.GetBundles()) == 2 })
		tds := []string{r.GetBundles()[0].GetTrustDomain(), r.GetBundles()[1].GetTrustDomain()}
		slices.Sort(tds)
		if !slices.Equal(tds, []string{"example.org", "partner.org"}) {
			t.Fatalf("bundles %v", tds)
		}
	})
}

func TestSyncNodeAliasDeauthorization(t *testing.T) {
	e := newEnv(t)
	n1, err := e.attest(t, e.nodeAttestor(t, "node-1", nil))
	if err != nil {
		t.Fatal(err)
	}
	alias := e.entry(t, "spiffe://example.org/nodes/web-tier", caID.String(), "x509pop:subject:cn:node-1")
	child := e.entry(t, "spiffe://example.org/web", alias.SPIFFEID)
	s := e.openSync(t, n1, 0)
	first := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	want := []string{alias.ID, child.ID}
	slices.Sort(want)
	if !slices.Equal(entryIDs(first), want) {
		t.Fatalf("first response entries %v, want alias and child %v", entryIDs(first), want)
	}
	// The alias no longer matches node-1: both go away although the child
	// itself did not change.
	sels, _ := selector.ParseAll([]string{"x509pop:subject:cn:node-2"})
	alias.Selectors, alias.Revision = sels, 0
	if _, err := e.store.UpdateEntry(e.ctx, "test", alias); err != nil {
		t.Fatal(err)
	}
	r := s.waitFor(t, "the child's de-authorization", deletes(child.ID))
	if !slices.Contains(r.GetDeletedEntryIds(), alias.ID) {
		t.Fatalf("deleted %v lacks the alias %s", r.GetDeletedEntryIds(), alias.ID)
	}
	// And come back when it matches again.
	sels, _ = selector.ParseAll([]string{"x509pop:subject:cn:node-1"})
	alias.Selectors = sels
	if _, err := e.store.UpdateEntry(e.ctx, "test", alias); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "the child again", hasEntry(child.ID))
}

func TestSyncResumesFromRevision(t *testing.T) {
	e := newEnv(t)
	a, b := e.joinAgent(t), e.joinAgent(t)
	e1 := e.entry(t, "spiffe://example.org/one", a.id)
	s := e.openSync(t, a, 0)
	rev := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true }).GetRevision()

	e2 := e.entry(t, "spiffe://example.org/two", a.id)
	theirs := e.entry(t, "spiffe://example.org/theirs", b.id)
	r := e.openSync(t, a, rev).waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	if r.GetFull() || !slices.Equal(entryIDs(r), []string{e2.ID}) || r.GetRevision() <= rev {
		t.Fatalf("resumed: full=%v entries=%v revision %d (from %d); want only %s", r.GetFull(), entryIDs(r), r.GetRevision(), rev, e2.ID)
	}
	if slices.Contains(entryIDs(r), theirs.ID) {
		t.Fatal("resumed response carries another agent's entry")
	}
	// After a deletion the changes cannot tell what the agent lost: full set.
	if _, err := e.store.DeleteEntry(e.ctx, "test", e2.ID); err != nil {
		t.Fatal(err)
	}
	r = e.openSync(t, a, rev).waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	if !r.GetFull() || !slices.Equal(entryIDs(r), []string{e1.ID}) {
		t.Fatalf("after a deletion: full=%v entries=%v, want the full set [%s]", r.GetFull(), entryIDs(r), e1.ID)
	}
	// A revision from the future (a restored store) gets the full set too.
	r = e.openSync(t, a, r.GetRevision()+100).waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	if !r.GetFull() || !slices.Equal(entryIDs(r), []string{e1.ID}) {
		t.Fatalf("from a future revision: full=%v entries=%v, want the full set [%s]", r.GetFull(), entryIDs(r), e1.ID)
	}
}

func TestSyncEndsForBannedAgent(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	s := e.openSync(t, a, 0)
	s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	rec, err := e.store.GetAgent(e.ctx, a.id)
	if err != nil {
		t.Fatal(err)
	}
	rec.Banned = true
	if _, err := e.store.UpdateAgent(e.ctx, "test", rec); err != nil {
		t.Fatal(err)
	}
	e.entry(t, "spiffe://example.org/after-ban", a.id)
	wantCode(t, s.end(t), codes.PermissionDenied, "is banned")
}

func TestSyncManyStreams(t *testing.T) {
	e := newEnv(t)
	agents := make([]*agent, 5)
	streams := make([]*syncStream, len(agents))
	for i := range agents {
		agents[i] = e.joinAgent(t)
		streams[i] = e.openSync(t, agents[i], 0)
		streams[i].waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	}
	// An extra stream that is never read from stays open beside the others.
	stalled, err := agents[0].client.Sync(e.ctx, &nodev1.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_ = stalled
	for i, a := range agents {
		w := e.entry(t, "spiffe://example.org/w"+string(rune('a'+i)), a.id)
		streams[i].waitFor(t, "agent's new entry", hasEntry(w.ID))
	}
}

func TestSyncPushesTaintedKeys(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	s := e.openSync(t, a, 0)
	if first := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true }); len(first.GetTaintedX509KeyIds()) != 0 {
		t.Fatalf("tainted keys before any taint: %v", first.GetTaintedX509KeyIds())
	}
	old := activeX509(t, e)
	if _, err := e.ca.Prepare(e.ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ca.Activate(e.ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if err := e.ca.Taint(e.ctx, ca.X509, old); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "the tainted key "+old, func(r *nodev1.SyncResponse) bool { return slices.Contains(r.GetTaintedX509KeyIds(), old) })
}

func activeX509(t *testing.T, e *env) string {
	t.Helper()
	st, err := e.ca.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range st.Keys {
		if k.Kind == ca.X509 && k.State == ca.Active {
			return k.ID
		}
	}
	t.Fatal("no active x509 key")
	return ""
}

// Evicting or banning an agent (on any replica: the store is all they
// share) ends its open Sync streams without waiting for an unrelated
// change, with a PermissionDenied that says why.
func TestSyncEndsAtOnceWhenAgentRemoved(t *testing.T) {
	tests := []struct {
		name   string
		remove func(e *env, id string) error
		code   codes.Code
		want   string
	}{
		{"evict", func(e *env, id string) error { return e.store.DeleteAgent(e.ctx, "test", id) }, codes.PermissionDenied, "was evicted: it must attest again"},
		{"ban", func(e *env, id string) error {
			rec, err := e.store.GetAgent(e.ctx, id)
			if err != nil {
				return err
			}
			rec.Banned, rec.Serial = true, ""
			_, err = e.store.UpdateAgent(e.ctx, "test", rec)
			return err
		}, codes.PermissionDenied, "is banned"},
		// Renewed on any replica: the stream of the old SVID ends without
		// waiting for a change that concerns the agent.
		{"renew", func(e *env, id string) error {
			rec, err := e.store.GetAgent(e.ctx, id)
			if err != nil {
				return err
			}
			rec.Serial = "0123456789abcdef"
			_, err = e.store.UpdateAgent(e.ctx, "test", rec)
			return err
		}, codes.Unauthenticated, "was renewed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			a, other := e.joinAgent(t), e.joinAgent(t)
			s := e.openSync(t, a, 0)
			s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
			keep := e.openSync(t, other, 0)
			keep.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
			start := time.Now()
			if err := tt.remove(e, a.id); err != nil {
				t.Fatal(err)
			}
			wantCode(t, s.end(t), tt.code, tt.want)
			t.Logf("%s: stream ended %s after the store change", tt.name, time.Since(start))
			// The other agent's stream stays open and keeps working.
			en := e.entry(t, "spiffe://example.org/still-synced", other.id)
			keep.waitFor(t, "an entry after the other agent was removed", hasEntry(en.ID))
		})
	}
}

// A revoked SVID reaches agents in the sync: the first response carries
// the CA's CRLs, and a revocation pushes new ones listing the serial.
func TestSyncPushesCRLs(t *testing.T) {
	e := newEnv(t)
	a := e.joinAgent(t)
	s := e.openSync(t, a, 0)
	first := s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	if !first.GetX509CrlsChanged() || len(first.GetX509Crls()) != 1 {
		t.Fatalf("first response: crls changed %v, %d CRLs; want the CA's one (empty) CRL", first.GetX509CrlsChanged(), len(first.GetX509Crls()))
	}
	serial := big.NewInt(0xabcdef) // any serial: a workload SVID's
	if err := e.ca.RevokeSVID(e.ctx, "admin", serial.Text(16), ""); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "a CRL listing "+serial.Text(16), func(r *nodev1.SyncResponse) bool {
		for _, der := range r.GetX509Crls() {
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			for _, re := range crl.RevokedCertificateEntries {
				if re.SerialNumber.Cmp(serial) == 0 {
					return r.GetX509CrlsChanged()
				}
			}
		}
		return false
	})
}

// A store that pushes its changes (SQLite wakes the watcher in-process)
// reaches open streams without any poll: here neither the poll nor the
// safety poll would come within the test.
func TestSyncPushedWithoutPolling(t *testing.T) {
	e := newEnv(t, func(c *nodeapi.Config) { c.PollInterval, c.SafetyPoll = time.Hour, time.Hour })
	a := e.joinAgent(t)
	s := e.openSync(t, a, 0)
	s.waitFor(t, "the first response", func(*nodev1.SyncResponse) bool { return true })
	for i := range 3 {
		en := e.entry(t, fmt.Sprintf("spiffe://example.org/pushed-%d", i), a.id)
		s.waitFor(t, "the new entry", hasEntry(en.ID))
	}
	if err := e.store.SetBundle(e.ctx, "test", store.Bundle{TrustDomain: "partner.org", X509Authorities: [][]byte{e.pki.Roots()[0].Raw}}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, "the partner bundle", func(r *nodev1.SyncResponse) bool { return len(r.GetBundles()) == 2 })
}
