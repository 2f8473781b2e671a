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
