package workloadapi

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/workload"
)

// Source is what the Workload API needs from the agent's cache.
type Source interface {
	// Subscribe follows what a workload with sels may see.
	Subscribe(sels selector.Set) workload.Subscription
	// FetchJWTSVID mints (or returns a cached, fresh) JWT-SVID for id, which
	// must be one of the identities sels may hold; a zero id means each of
	// them. It fails with workload.ErrNoIdentity when sels hold none.
	FetchJWTSVID(ctx context.Context, sels selector.Set, id spiffeid.ID, audience []string) ([]workload.JWTSVID, error)
}
