package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/pgtest"
)

// waitClosed fails the test unless ch closes; the bound only keeps a broken
// build from hanging, it measures nothing.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no change reported", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Every write of entries and bundles wakes the watchers when it returns;
// other writes (agents, audit) do not: the node API looks for removed
// agents on its own schedule, and agents renew all the time.
func TestChangedByWrites(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := t.Context()
			s := b.openFresh(t)
			defer s.Close()
			var entry store.Entry
			agent := store.Agent{ID: "spiffe://example.org/sigil/agent/join_token/x", AttestationType: "join_token", Serial: "1", ExpiresAt: time.Now().Add(time.Hour)}
			bundle := store.Bundle{TrustDomain: "other.org", X509Authorities: nil, Sequence: 1}
			steps := []struct {
				name string
				wake bool
				do   func() error
			}{
				{"create entries", true, func() error {
					out, err := s.CreateEntries(ctx, "t", []store.Entry{{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/p", Selectors: mustSelectors(t, "unix:uid:1")}})
					if err == nil {
						entry = out[0]
					}
					return err
				}},
				{"update entry", true, func() error { _, err := s.UpdateEntry(ctx, "t", entry); return err }},
				{"delete entry", true, func() error { _, err := s.DeleteEntry(ctx, "t", entry.ID); return err }},
				{"create agent", false, func() error { _, err := s.CreateAgent(ctx, "t", agent); return err }},
				{"ban agent", false, func() error { a := agent; a.Banned = true; _, err := s.UpdateAgent(ctx, "t", a); return err }},
				{"evict agent", false, func() error { return s.DeleteAgent(ctx, "t", agent.ID) }},
				{"set bundle", true, func() error { return s.SetBundle(ctx, "t", bundle) }},
				{"delete bundle", true, func() error { return s.DeleteBundle(ctx, "t", bundle.TrustDomain) }},
				{"append audit", false, func() error {
					_, err := s.AppendAudit(ctx, store.AuditEvent{Time: time.Now(), Actor: "t", Action: "svid.sign"})
					return err
				}},
				{"failed update", false, func() error {
					_, err := s.UpdateEntry(ctx, "t", entry) // deleted: not found, nothing written
					if err == nil {
						t.Fatal("update of a deleted entry succeeded")
					}
					return nil
				}},
			}
			for _, st := range steps {
				ch := s.Changed()
				if err := st.do(); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				if got := isClosed(ch); got != st.wake {
					t.Errorf("%s: Changed closed = %v, want %v", st.name, got, st.wake)
				}
			}
		})
	}
}

// A replica whose LISTEN connection is killed misses no change made while
// it was away: once it is listening again it wakes its watchers, and they
// read every change since their last revision. The replica's safety poll
// plays no part (there is none at this level), and its reconnect waits on a
// fake clock, so the changes are certainly made while it is disconnected.
func TestListenCatchesUpAfterLostConnection(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Start(t)
	writer, err := sqlstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	clk := clock.NewFake(time.Now())
	replica, err := sqlstore.OpenPostgres(ctx, dsn, sqlstore.WithListenClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- replica.Listen(lctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	}()

	create := func(name string) {
		t.Helper()
		if _, err := writer.CreateEntries(ctx, "t", []store.Entry{{SPIFFEID: "spiffe://example.org/" + name, ParentID: "spiffe://example.org/p", Selectors: mustSelectors(t, "unix:uid:1")}}); err != nil {
			t.Fatal(err)
		}
	}
	// Listening: a change on the other store reaches this one. Retry the
	// write until it does, as LISTEN may not be in effect yet.
	ch := replica.Changed()
	for i := 0; !isClosed(ch); i++ {
		if i == 300 {
			t.Fatal("replica never saw a change made by the writer")
		}
		create(fmt.Sprintf("warm-%d", i))
		time.Sleep(10 * time.Millisecond)
	}
	seen, err := replica.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Kill the replica's LISTEN connection and wait until it waits to
	// reconnect.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var killed int
	if err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'sigil-listen' AND datname = current_database()`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("killed %d listen connections, want 1", killed)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := clk.WaitTimers(wctx, 1); err != nil {
		t.Fatalf("replica does not wait to reconnect: %v", err)
	}

	// Changes while it is away do not reach it...
	ch = replica.Changed()
	create("while-away-1")
	create("while-away-2")
	want, err := writer.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if isClosed(ch) {
		t.Fatal("replica was woken while disconnected")
	}
	// ...until it reconnects, then it wakes its watchers, who catch up by
	// revision.
	clk.Advance(time.Minute)
	waitClosed(t, ch, "after reconnect")
	changes, err := replica.EntriesSince(ctx, seen)
	if err != nil {
		t.Fatal(err)
	}
	if changes.Revision != want || len(changes.Updated) != 2 {
		t.Fatalf("after reconnect: revision %d with %d entries since %d, want revision %d with 2", changes.Revision, len(changes.Updated), seen, want)
	}
	// And it listens again.
	ch = replica.Changed()
	create("after")
	waitClosed(t, ch, "change after reconnect")
}
