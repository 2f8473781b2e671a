package agent

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/workloadapi"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/sds"
)

var (
	_ sds.Source  = (*cache.Cache)(nil)
	_ sds.Watcher = sdsAttestor{}
)

// SDS returns a SocketConfig.Register hook that serves Envoy SDS v3 on the
// agent's socket from the same cache as the Workload API. The calling Envoy
// is attested from its peer credentials like any workload. mods adjust the
// server's config (e.g. its pending timeout).
func SDS(att workloadapi.Attestor, logger *slog.Logger, reg prometheus.Registerer, mods ...func(*sds.Config)) func(*grpc.Server, *cache.Cache) error {
	return func(g *grpc.Server, c *cache.Cache) error {
		cfg := sds.Config{Source: c, Attestor: sdsAttestor{att}, Logger: logger, Metrics: reg}
		for _, m := range mods {
			m(&cfg)
		}
		srv, err := sds.New(cfg)
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

// Watch passes the workload attestor's watch of the caller on to SDS
// streams (sds.Watcher), so that they attest again when its pod goes.
func (a sdsAttestor) Watch(ctx context.Context) (<-chan struct{}, func()) {
	info, ok := peercred.FromContext(ctx)
	w, isWatcher := a.att.(attest.Watcher)
	if !ok || !isWatcher {
		return nil, func() {}
	}
	return w.Watch(info)
}
