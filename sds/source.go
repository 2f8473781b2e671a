package sds

import (
	"context"

	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/workload"
)

// Source follows what callers with a given set of selectors may see.
type Source interface {
	Subscribe(sels selector.Set) workload.Subscription
}

// Attestor gives the selectors of the caller of a stream, from what the
// transport put in ctx (the agent uses the unix socket's peer credentials).
// An error means the caller cannot be attested and is refused.
type Attestor interface {
	Attest(ctx context.Context) ([]selector.Selector, error)
}

// Watcher is an optional ability of an Attestor: it tells an open stream
// when its caller's selectors may have changed (the caller's pod was
// deleted or relabelled). The stream then attests the caller again: a
// refusal ends it with PermissionDenied, other selectors re-subscribe.
type Watcher interface {
	// Watch returns a channel closed when what Attest gives for the caller
	// of ctx may have changed, and a func that releases the watch (safe to
	// call more than once). A nil channel means never. Streams call it
	// before Attest.
	Watch(ctx context.Context) (changed <-chan struct{}, stop func())
}
