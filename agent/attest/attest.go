package attest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/selector"
)

// ErrNotApplicable is matched (errors.Is) by an attestor's error when the
// caller is not the kind of workload it attests (a host process for the
// Kubernetes attestor): that attestor adds no selectors and the others
// still decide.
var ErrNotApplicable = errors.New("attestor does not apply to this workload")

// ErrRefused is matched by an attestor's error when it refuses the caller
// for a reason the caller may be told (its pod is unknown or deleted, its
// container is not in the pod, no attestor applies), as opposed to a
// failure of the agent itself. Servers answer it with PermissionDenied.
var ErrRefused = errors.New("workload refused")

// Attestor finds the selectors of the process behind a connection.
type Attestor interface {
	Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error)
}

// Watcher is an optional ability of an Attestor: it tells an open stream
// when the selectors it would give the caller may have changed (the
// caller's pod was deleted or relabelled), so that the stream attests
// again.
type Watcher interface {
	// Watch returns a channel closed when what Attest gives for info may
	// have changed, and a func that releases the watch (safe to call more
	// than once). A nil channel means never. Call Watch before Attest, so
	// that no change between the two is missed.
	Watch(info peercred.Info) (changed <-chan struct{}, stop func())
}

// Chain is a list of attestors run in order on each caller.
type Chain []Attestor

// Attest returns the selectors of every attestor, sorted and deduplicated.
// Any error other than one matching ErrNotApplicable fails the whole
// attestation: a Kubernetes workload that cannot be attested as one is
// refused, not attested as a mere host process.
func (c Chain) Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error) {
	var out []selector.Selector
	for _, a := range c {
		sels, err := a.Attest(ctx, info)
		if errors.Is(err, ErrNotApplicable) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sels...)
	}
	if out == nil && len(c) > 0 {
		return nil, fmt.Errorf("%w: no attestor applies to pid %d", ErrRefused, info.PID)
	}
	return selector.Normalize(out), nil
}

// Watch combines the watches of the attestors that are Watchers: the
// channel is closed when any of theirs is. With two or more it runs one
// goroutine per watch until stop.
func (c Chain) Watch(info peercred.Info) (<-chan struct{}, func()) {
	var chans []<-chan struct{}
	var stops []func()
	for _, a := range c {
		w, ok := a.(Watcher)
		if !ok {
			continue
		}
		ch, stop := w.Watch(info)
		if ch == nil {
			stop()
			continue
		}
		chans, stops = append(chans, ch), append(stops, stop)
	}
	switch len(chans) {
	case 0:
		return nil, func() {}
	case 1:
		return chans[0], stops[0]
	}
	out, done := make(chan struct{}), make(chan struct{})
	var fire, end sync.Once
	for _, ch := range chans {
		go func() {
			select {
			case <-ch:
				fire.Do(func() { close(out) })
			case <-done:
			}
		}()
	}
	return out, func() {
		end.Do(func() {
			close(done)
			for _, stop := range stops {
				stop()
			}
		})
	}
}
