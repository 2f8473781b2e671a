package ca_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca"
)

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// take returns what was written since the last take.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

const unpublishedWarning = "activating a ca key published for less than the publish wait"

// Activating a key that has been in the bundle for less than the publish
// wait goes ahead (forced, or scheduled after the CA was down past the
// prepare time) but says so, naming the key, how long it was published
// and the wait; a key published long enough activates quietly.
func TestActivateWarnsOfAKeyNotPublishedLongEnough(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnv(t, func(_ *env, c *ca.Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	ctx := context.Background()

	t.Run("forced at once", func(t *testing.T) {
		logs.take()
		ks, err := e.ca.Prepare(ctx, ca.X509)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Second)
		if got, err := e.ca.Activate(ctx, ca.X509); err != nil || got.ID != ks.ID || got.State != ca.Active {
			t.Fatalf("activate = %+v, %v: want %s active", got, err, ks.ID)
		}
		out := logs.take()
		for _, want := range []string{unpublishedWarning, "key_id=" + ks.ID, "trigger=forced", "published_for=1s", "publish_wait=" + ca.DefaultRefreshHint.String()} {
			if !strings.Contains(out, want) {
				t.Fatalf("log lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("forced after the publish wait", func(t *testing.T) {
		logs.take()
		if _, err := e.ca.Prepare(ctx, ca.JWT); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(ca.DefaultRefreshHint + time.Second)
		if _, err := e.ca.Activate(ctx, ca.JWT); err != nil {
			t.Fatal(err)
		}
		if out := logs.take(); strings.Contains(out, unpublishedWarning) {
			t.Fatalf("a key published for longer than the wait was warned of:\n%s", out)
		}
	})
	t.Run("scheduled after the CA was down past the prepare time", func(t *testing.T) {
		// The X.509 key activated above lives DefaultCATTL; the CA wakes
		// at 7/8 of it with nothing prepared: it prepares, and the next
		// tick activates (the key is due).
		e.clock.Advance(ca.DefaultCATTL * 7 / 8)
		logs.take()
		if err := e.ca.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		prepared := keyIDs(t, e.ca, ca.X509, ca.Prepared)
		if len(prepared) != 1 {
			t.Fatalf("prepared keys after the wake-up: %v", prepared)
		}
		e.clock.Advance(2 * time.Second)
		if err := e.ca.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if active := keyIDs(t, e.ca, ca.X509, ca.Active); len(active) != 1 || active[0] != prepared[0] {
			t.Fatalf("active keys %v, want the prepared %s", active, prepared[0])
		}
		out := logs.take()
		for _, want := range []string{unpublishedWarning, "key_id=" + prepared[0], "trigger=scheduled"} {
			if !strings.Contains(out, want) {
				t.Fatalf("log lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("scheduled on time", func(t *testing.T) {
		// Prepared at half its life, activated at five sixths: published
		// for a third of the key's life, far longer than the wait.
		active := keyIDs(t, e.ca, ca.X509, ca.Active)[0]
		var nb time.Time
		st, err := e.ca.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range st.Keys {
			if k.ID == active {
				nb = k.NotBefore
			}
		}
		life := ca.DefaultCATTL
		e.clock.Advance(nb.Add(life/2 + time.Minute).Sub(e.clock.Now()))
		if err := e.ca.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		logs.take()
		e.clock.Advance(life/3 + time.Minute)
		if err := e.ca.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if got := keyIDs(t, e.ca, ca.X509, ca.Active)[0]; got == active {
			t.Fatal("the scheduled activation did not happen")
		}
		if out := logs.take(); strings.Contains(out, unpublishedWarning) {
			t.Fatalf("an on-time activation was warned of:\n%s", out)
		}
	})
}
