package sds_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/sds"
)

// switchable attests every caller to what the test set last, and wakes
// every open stream when the test sets something else (sds.Watcher), as
// the agent's k8s attestor does when a pod is deleted or relabelled.
type switchable struct {
	mu       sync.Mutex
	sels     []selector.Selector
	err      error
	changed  chan struct{}
	watching int
}

var _ sds.Watcher = (*switchable)(nil)

func (a *switchable) Attest(context.Context) ([]selector.Selector, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sels, a.err
}

func (a *switchable) Watch(context.Context) (<-chan struct{}, func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.watching++
	var once sync.Once
	return a.changed, func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.watching--
		})
	}
}

func (a *switchable) set(sels []selector.Selector, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sels, a.err = sels, err
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *switchable) watches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.watching
}

// Open SotW and Delta streams attest their caller again when the attestor
// says it changed: other selectors bring that caller's SVID as "default";
// a refusal ends both streams with PermissionDenied.
func TestStreamsAttestAgain(t *testing.T) {
	att := &switchable{sels: mustSelectors(cartUID), changed: make(chan struct{})}
	h := newHarness(t, func(c *sds.Config) { c.Attestor = att })
	cart, other := h.ca.Issue(t, cartID), h.ca.Issue(t, otherID)
	h.setEntry("e1", cart, cartUID)
	h.setEntry("e2", other, "unix:uid:2000")

	s, err := h.client.StreamSecrets(as(t), "default")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := h.client.DeltaSecrets(as(t), "default")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := s.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if !sameSerial(leaf(t, s.Secret("default")), cart.Certificates[0]) || !sameSerial(leaf(t, d.Secret("default")), cart.Certificates[0]) {
		t.Fatal("first responses are not cart's SVID")
	}
	if n := att.watches(); n != 2 {
		t.Fatalf("%d streams watch their caller, want 2", n)
	}

	att.set(mustSelectors("unix:uid:2000"), nil)
	if _, err := s.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Next(as(t)); err != nil {
		t.Fatal(err)
	}
	if !sameSerial(leaf(t, s.Secret("default")), other.Certificates[0]) || !sameSerial(leaf(t, d.Secret("default")), other.Certificates[0]) {
		t.Fatal("after new selectors, default is not the new caller's SVID")
	}

	before := h.counter(t, "sigil_sds_attestation_failures_total")
	att.set(nil, errors.New("kubernetes workload refused: pod 1234 was deleted"))
	if _, err := s.Next(as(t)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sotw after refusal: %v, want PermissionDenied", err)
	}
	if _, err := d.Next(as(t)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("delta after refusal: %v, want PermissionDenied", err)
	}
	if got := h.counter(t, "sigil_sds_attestation_failures_total"); got != before+2 {
		t.Fatalf("attestation failures %v, want %v", got, before+2)
	}
	waitFor(t, "ended streams to release their watches", func() bool { return att.watches() == 0 })
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
