package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/socketlimit"
	"github.com/sigilhq/sigil/agent/workloadapi"
)

var _ workloadapi.Source = (*cache.Cache)(nil)

// SocketConfig says how to serve the agent's unix socket.
type SocketConfig struct {
	Path     string
	Attestor workloadapi.Attestor  // workload attestation from peer credentials
	Metrics  prometheus.Registerer // where the Workload API's series are registered; nil: nowhere
	Logger   *slog.Logger
	// Limiter bounds what callers may hold on the socket (default:
	// socketlimit's defaults, without metrics).
	Limiter *socketlimit.Limiter
	// Register adds further services (e.g. SDS) on the same socket.
	Register []func(g *grpc.Server, c *cache.Cache) error
}

// ServeSocket returns a ServeFunc that serves the SPIFFE Workload API (and
// any further services) from the cache on the unix socket at cfg.Path,
// which every local user may connect to.
func ServeSocket(cfg SocketConfig) ServeFunc {
	return func(ctx context.Context, c *cache.Cache) error {
		if cfg.Logger == nil {
			cfg.Logger = slog.New(slog.DiscardHandler)
		}
		var wm workloadapi.Metrics
		if cfg.Metrics != nil {
			m, err := workloadapi.NewPrometheusMetrics(cfg.Metrics)
			if err != nil {
				return err
			}
			wm = m
		}
		wl, err := workloadapi.New(workloadapi.Config{Source: c, Attestor: cfg.Attestor, Logger: cfg.Logger, Metrics: wm})
		if err != nil {
			return err
		}
		lim := cfg.Limiter
		if lim == nil {
			if lim, err = socketlimit.New(socketlimit.Config{Logger: cfg.Logger}); err != nil {
				return err
			}
		}
		g := grpc.NewServer(lim.ServerOptions(peercred.NewCredentials())...)
		wl.Register(g)
		for _, reg := range cfg.Register {
			if err := reg(g, c); err != nil {
				return err
			}
		}
		ln, err := workloadapi.Listen(cfg.Path)
		if err != nil {
			return err
		}
		cfg.Logger.Info("workload api listening", "path", cfg.Path)
		done := make(chan error, 1)
		go func() { done <- g.Serve(ln) }()
		select {
		case err := <-done:
			return fmt.Errorf("workload api: %w", err)
		case <-ctx.Done():
		}
		// Streams to workloads never end by themselves: give unary calls a
		// moment, then close.
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			g.Stop()
		}
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("workload api: %w", err)
		}
		return nil
	}
}
