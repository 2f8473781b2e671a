package agent

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/workloadapi"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/sds"
)

// SDS returns a SocketConfig.Register hook that serves Envoy SDS v3 on the
// agent's socket from the same cache as the Workload API. The calling Envoy
// is attested from its peer credentials like any workload.
func SDS(att workloadapi.Attestor, logger *slog.Logger, reg prometheus.Registerer) func(*grpc.Server, *cache.Cache) error {
	return func(g *grpc.Server, c *cache.Cache) error {
		srv, err := sds.New(sds.Config{Source: sdsSource{c}, Attestor: sdsAttestor{att}, Logger: logger, Metrics: reg})
		if err != nil {
			return err
		}
		srv.Register(g)
		return nil
	}
}

// sdsAttestor attests an SDS caller from the peer credentials the socket's
// transport put in the stream's context.
type sdsAttestor struct{ att workloadapi.Attestor }

func (a sdsAttestor) Attest(ctx context.Context) ([]selector.Selector, error) {
	info, ok := peercred.FromContext(ctx)
	if !ok {
		return nil, errors.New("no peer credentials: SDS is served only on the agent's unix socket")
	}
	return a.att.Attest(ctx, info)
}

// sdsSource adapts the cache's subscriptions to the SDS server's types.
type sdsSource struct{ c workloadapi.Source }

func (s sdsSource) Subscribe(sels selector.Set) sds.Subscription {
	sub := &sdsSubscription{in: s.c.Subscribe(sels), out: make(chan sds.Update, 1), done: make(chan struct{})}
	go sub.run()
	return sub
}

type sdsSubscription struct {
	in   workloadapi.Subscription
	out  chan sds.Update
	done chan struct{}
}

func (s *sdsSubscription) run() {
	for {
		select {
		case <-s.done:
			return
		case u := <-s.in.Updates():
			ids := make([]sds.Identity, len(u.Identities))
			for i, id := range u.Identities {
				ids[i] = sds.Identity(id)
			}
			next := sds.Update{Identities: ids, Bundle: u.Bundle, FederatedBundles: u.FederatedBundles}
			// Latest wins: replace an update the reader has not taken yet.
			select {
			case <-s.out:
			default:
			}
			s.out <- next
		}
	}
}

func (s *sdsSubscription) Updates() <-chan sds.Update { return s.out }

func (s *sdsSubscription) Close() {
	s.in.Close()
	close(s.done)
}
