package sds_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/sds"
)

// A stream that serves nothing it asks for (a caller with no entry, a
// name that never resolves) is closed with NotFound after the pending
// timeout, so such streams cannot pile up; a stream that serves something
// stays open however long it lives.
func TestPendingStreamsAreClosed(t *testing.T) {
	const timeout = 5 * time.Minute
	setup := func(t *testing.T) (*harness, *clock.Fake) {
		fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		h := newHarness(t, func(c *sds.Config) { c.Clock = fake; c.PendingTimeout = timeout })
		h.setEntry("e1", h.ca.Issue(t, cartID), cartUID)
		return h, fake
	}
	wantClosed := func(t *testing.T, h *harness, err error) {
		t.Helper()
		if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "could be served for 5m0s") {
			t.Fatalf("stream ended with %v, want NotFound naming the timeout", err)
		}
		h.waitCounter(t, 1, "sigil_sds_pending_timeouts_total")
	}

	t.Run("sotw caller without identity", func(t *testing.T) {
		h, fake := setup(t)
		s, err := h.client.StreamSecrets(as(t, "unix:uid:2000"), "default")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := fake.WaitTimers(as(t), 1); err != nil {
			t.Fatal(err)
		}
		fake.Advance(timeout - time.Second)
		fake.Advance(time.Second)
		_, err = s.Recv(as(t))
		wantClosed(t, h, err)
	})
	t.Run("delta name that never resolves", func(t *testing.T) {
		h, fake := setup(t)
		d, err := h.client.DeltaSecrets(as(t, cartUID), "no-such-name")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := fake.WaitTimers(as(t), 1); err != nil {
			t.Fatal(err)
		}
		fake.Advance(timeout)
		_, err = d.Recv(as(t))
		wantClosed(t, h, err)
	})
	t.Run("served stream stays open", func(t *testing.T) {
		h, fake := setup(t)
		s, err := h.client.StreamSecrets(as(t, cartUID), "default")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		fake.Advance(3 * timeout)
		h.setEntry("e1", h.ca.Issue(t, cartID), cartUID) // a rotation
		if _, err := s.Next(as(t)); err != nil {
			t.Fatalf("served stream after %s: %v", 3*timeout, err)
		}
		if n := h.counter(t, "sigil_sds_pending_timeouts_total"); n != 0 {
			t.Fatalf("%v pending timeouts", n)
		}
	})
	t.Run("stream whose identity goes away", func(t *testing.T) {
		h, fake := setup(t)
		d, err := h.client.DeltaSecrets(as(t, cartUID), "default")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, err := d.Next(as(t)); err != nil {
			t.Fatal(err)
		}
		h.src.Delete("e1")
		resp, err := d.Next(as(t))
		if err != nil || len(resp.GetRemovedResources()) != 1 {
			t.Fatalf("removal: %v, %v", resp, err)
		}
		if err := fake.WaitTimers(as(t), 1); err != nil {
			t.Fatal(err)
		}
		fake.Advance(timeout)
		_, err = d.Recv(as(t))
		wantClosed(t, h, err)
	})
}
