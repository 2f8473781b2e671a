package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/policies"
)

func newAuthzCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "authz", Short: "Run the ext_authz service"}
	var configPath string
	run := &cobra.Command{
		Use:   "run",
		Short: "Answer Envoy ext_authz checks with Rego policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(configPath)
			if err != nil {
				return fmt.Errorf("authz config: %w", err)
			}
			rc, err := authz.ParseConfig(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", configPath, err)
			}
			if _, set := os.LookupEnv("GOGC"); !set {
				debug.SetGCPercent(rc.GCPercent)
			}
			run, err := buildAuthz(cmd.Context(), rc, newLogger(cmd), newRegistry())
			if err != nil {
				return err
			}
			return run(cmd.Context())
		},
	}
	run.Flags().StringVar(&configPath, "config", "authz.yaml", "authz configuration file (YAML)")
	cmd.AddCommand(run)
	return cmd
}

// devAuthz prepares authz for `sigil dev`: listen on 127.0.0.1:9191, policies from dir/policies (seeded from the embedded policies/examples on first start), decision log at dir/decisions.log.
func devAuthz(dir string, logger *slog.Logger) (run func(ctx context.Context) error, err error) {
	return devAuthzAt(dir, authz.DefaultListen, logger, prometheus.NewRegistry())
}

// devAuthzAt is devAuthz on another address, registering its metrics on reg.
func devAuthzAt(dir, listen string, logger *slog.Logger, reg *prometheus.Registry) (func(ctx context.Context) error, error) {
	pdir := filepath.Join(dir, "policies")
	if err := seedPolicies(pdir); err != nil {
		return nil, err
	}
	rc, err := authz.FileConfig{
		Listen:      listen,
		Policy:      &authz.FilePolicySource{Dir: pdir},
		DecisionLog: &authz.FileDecisionLog{File: filepath.Join(dir, "decisions.log"), MaxBytes: 64 << 20},
	}.Validate()
	if err != nil {
		return nil, err
	}
	return buildAuthz(context.Background(), rc, logger.With("component", "authz"), reg)
}

// seedPolicies copies the embedded dev policy into an empty or missing dir.
func seedPolicies(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("policy directory: %w", err)
	}
	if len(entries) > 0 {
		return nil
	}
	if err := policies.Seed(dir); err != nil {
		return fmt.Errorf("seed policies into %s: %w", dir, err)
	}
	return nil
}

func policySource(ps authz.PolicySource) authz.Source {
	switch {
	case ps.Dir != "":
		return policysrc.Dir{Path: ps.Dir}
	case ps.BundleFile != "":
		return policysrc.BundleFile{Path: ps.BundleFile}
	default:
		return &policysrc.BundleHTTP{URL: ps.BundleURL, Client: &http.Client{Timeout: 30 * time.Second}}
	}
}

// buildAuthz wires engine, reloaders, decision log, server and metrics.
// Listeners are opened here so address errors surface before Run.
func buildAuthz(ctx context.Context, rc authz.RunConfig, logger *slog.Logger, reg *prometheus.Registry) (func(context.Context) error, error) {
	metrics, err := authz.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	var runs []func(context.Context) error

	loadPolicy := func(name string, ps authz.PolicySource, m *authz.Metrics) (*engine.Engine, error) {
		eng, err := engine.New(rc.DecisionPath)
		if err != nil {
			return nil, err
		}
		r := &authz.Reloader{Name: name, Source: policySource(ps), Target: eng, Interval: ps.PollInterval, Logger: logger, Metrics: m}
		if err := r.Once(ctx); err != nil && ps.BundleURL == "" {
			return nil, fmt.Errorf("%s policy: %w", name, err)
		}
		runs = append(runs, r.Run)
		return eng, nil
	}
	eng, err := loadPolicy("enforced", rc.Policy, metrics)
	if err != nil {
		return nil, err
	}
	cfg := authz.Config{Engine: eng, DryRun: rc.DryRun, Metrics: metrics, Input: input.Options{SkipBody: rc.SkipBody}, Logger: logger}
	if rc.Shadow != nil {
		shadow, err := loadPolicy("shadow", *rc.Shadow, nil)
		if err != nil {
			return nil, err
		}
		cfg.Shadow = shadow
	}

	if dlc := rc.DecisionLog; dlc.Enabled() {
		var sinks []decisionlog.Sink
		if dlc.File != "" {
			sinks = append(sinks, decisionlog.NewFileSink(dlc.File, dlc.MaxBytes, dlc.MaxBackups))
		}
		if dlc.Stdout {
			sinks = append(sinks, decisionlog.NewWriterSink(os.Stdout))
		}
		if dlc.HTTPURL != "" {
			sinks = append(sinks, decisionlog.NewHTTPSink(dlc.HTTPURL, &http.Client{Timeout: 30 * time.Second}, rc.DecisionPath, nil))
		}
		dl, err := decisionlog.New(decisionlog.Config{
			Sinks: sinks, Buffer: dlc.Buffer, MaskHeaders: dlc.MaskHeaders, LogRequest: dlc.LogRequest,
			Logger: logger, OnDrop: metrics.LogDropped,
		})
		if err != nil {
			return nil, err
		}
		cfg.Log = dl
		runs = append(runs, dl.Run)
	}

	srv, err := authz.New(cfg)
	if err != nil {
		return nil, err
	}
	lis, err := authz.Listen(rc.Listen)
	if err != nil {
		return nil, fmt.Errorf("authz listen: %w", err)
	}
	logger.Info("authz listening", "addr", lis.Addr().String(), "decision_path", rc.DecisionPath, "dry_run", rc.DryRun, "revision", eng.Revision())
	runs = append(runs, func(ctx context.Context) error { return srv.Serve(ctx, lis) })

	if rc.MetricsListen != "" {
		mlis, err := net.Listen("tcp", rc.MetricsListen)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("authz metrics listen: %w", err)
		}
		runs = append(runs, func(ctx context.Context) error { return serveMetrics(ctx, mlis, reg, eng, rc.PProf) })
	}

	return func(ctx context.Context) error {
		g, ctx := errgroup.WithContext(ctx)
		for _, r := range runs {
			g.Go(func() error { return r(ctx) })
		}
		return g.Wait()
	}, nil
}

func serveMetrics(ctx context.Context, lis net.Listener, reg *prometheus.Registry, eng *engine.Engine, withPProf bool) error {
	mux := http.NewServeMux()
	if withPProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if eng.Current() == nil {
			http.Error(w, "no policy loaded", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve authz metrics: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	}
}
