package attest

import (
	"context"
	"errors"
	"fmt"

	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/selector"
)

// ErrNotApplicable is matched (errors.Is) by an attestor's error when the
// caller is not the kind of workload it attests (a host process for the
// Kubernetes attestor): that attestor adds no selectors and the others
// still decide.
var ErrNotApplicable = errors.New("attestor does not apply to this workload")

// Attestor finds the selectors of the process behind a connection.
type Attestor interface {
	Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error)
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
		return nil, fmt.Errorf("no attestor applies to pid %d", info.PID)
	}
	return selector.Normalize(out), nil
}
