package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/authzconfig"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/authz/revocation"
)

// Config wires a Service.
type Config struct {
	authzconfig.Config
	// Listener, when set, is served instead of listening on Listen (so a
	// caller can learn the address before Run).
	Listener net.Listener
	// Metrics is where the service's series are registered; nil: nowhere.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Service is the ext_authz server with its policy reloaders and decision
// log.
type Service struct {
	cfg       Config
	engine    *engine.Engine
	reloaders []reloader
	log       *decisionlog.Logger // nil: no decision log
	signer    *svidSigner         // nil: no checkpoints
	server    *authz.Server
	revoc     *revocation.Watcher // nil: no revocation check
}

// reloader keeps one policy fresh; remote policies may be missing at start.
type reloader struct {
	*authz.Reloader
	remote bool
}

// New builds the engines, policy sources, decision log and server. It
// loads nothing and listens on nothing: call Run.
func New(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	metrics, err := authz.NewMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("authz metrics: %w", err)
	}
	s := &Service{cfg: cfg}
	policy := func(name string, ps authzconfig.PolicySource, m *authz.Metrics) (*engine.Engine, error) {
		eng, err := engine.New(cfg.DecisionPath)
		if err != nil {
			return nil, err
		}
		s.reloaders = append(s.reloaders, reloader{remote: ps.BundleURL != "", Reloader: &authz.Reloader{
			Name: name, Source: source(ps), Target: eng, Interval: ps.PollInterval, Logger: cfg.Logger, Metrics: m,
		}})
		return eng, nil
	}
	if s.engine, err = policy("enforced", cfg.Policy, metrics); err != nil {
		return nil, err
	}
	sc := authz.Config{
		Engine: s.engine, DryRun: cfg.DryRun, Metrics: metrics,
		Input: input.Options{SkipBody: cfg.SkipBody}, Logger: cfg.Logger, Limits: cfg.Limits,
	}
	if r := cfg.Revocation; r != nil {
		s.revoc = &revocation.Watcher{Socket: r.SDSSocket, Resource: r.Resource, Logger: cfg.Logger}
		sc.Revocation = s.revoc
	}
	if cfg.Shadow != nil {
		if sc.Shadow, err = policy("shadow", *cfg.Shadow, nil); err != nil {
			return nil, err
		}
	}
	if dl := cfg.DecisionLog; dl.Enabled() {
		lc := decisionlog.Config{
			Sinks: sinks(dl, cfg.DecisionPath), Buffer: dl.Buffer, MaskHeaders: dl.MaskHeaders, LogRequest: dl.LogRequest,
			Logger: cfg.Logger, OnDrop: metrics.LogDropped, OnFailure: dl.OnFailure, MaxBody: dl.MaxBody, MaxLine: dl.MaxLine,
		}
		if cp := dl.Checkpoints; cp != nil {
			s.signer = &svidSigner{socket: cp.WorkloadAPISocket, signerID: cp.SignerID, logger: cfg.Logger}
			lc.Checkpoint = decisionlog.CheckpointConfig{
				Sink: decisionlog.NewFileSink(cp.File, 0, 0), Identity: s.signer, Every: cp.Every, Interval: cp.Interval,
			}
		}
		if s.log, err = decisionlog.New(lc); err != nil {
			return nil, err
		}
		sc.Log = s.log
	}
	if s.server, err = authz.New(sc); err != nil {
		return nil, err
	}
	return s, nil
}

// source is the policy source ps names.
func source(ps authzconfig.PolicySource) authz.Source {
	switch {
	case ps.Dir != "":
		return policysrc.Dir{Path: ps.Dir}
	case ps.BundleFile != "":
		return policysrc.BundleFile{Path: ps.BundleFile}
	default:
		return &policysrc.BundleHTTP{URL: ps.BundleURL, Client: &http.Client{Timeout: 30 * time.Second}}
	}
}

// sinks are the decision log's sinks dl names.
func sinks(dl authzconfig.DecisionLog, decisionPath string) []decisionlog.Sink {
	var out []decisionlog.Sink
	if dl.File != "" {
		f := decisionlog.NewFileSink(dl.File, dl.MaxBytes, dl.MaxBackups)
		f.SetSync(dl.Sync)
		out = append(out, f)
	}
	if dl.Stdout {
		out = append(out, decisionlog.NewWriterSink(os.Stdout))
	}
	if dl.HTTPURL != "" {
		out = append(out, decisionlog.NewHTTPSink(dl.HTTPURL, &http.Client{Timeout: 30 * time.Second}, decisionPath, nil))
	}
	return out
}

// Ready reports whether an enforced policy is loaded and, with the
// revocation check on, the CRLs have arrived.
func (s *Service) Ready(ctx context.Context) error {
	if s.engine.Current() == nil {
		return errors.New("no policy loaded")
	}
	if s.revoc != nil {
		return s.revoc.Ready(ctx)
	}
	return nil
}

// Run listens, loads the policies, then answers ext_authz checks, reloads
// policies and writes the decision log until ctx ends. It listens first
// so that it is reachable once Ready. A policy that does not load at start
// is an error, except from a bundle URL: the server may come up before the
// bundle service does, and denies until a policy loads.
func (s *Service) Run(ctx context.Context) error {
	lis := s.cfg.Listener
	if lis == nil {
		var err error
		if lis, err = authz.Listen(s.cfg.Listen); err != nil {
			return fmt.Errorf("authz listen: %w", err)
		}
	}
	for _, r := range s.reloaders {
		if err := r.Once(ctx); err != nil && !r.remote {
			lis.Close()
			return fmt.Errorf("%s policy: %w", r.Name, err)
		}
	}
	s.cfg.Logger.Info("authz listening", "addr", lis.Addr().String(), "decision_path", s.cfg.DecisionPath,
		"dry_run", s.cfg.DryRun, "revision", s.engine.Revision())
	g, ctx := errgroup.WithContext(ctx)
	for _, r := range s.reloaders {
		g.Go(func() error { return r.Run(ctx) })
	}
	if s.log != nil {
		logDone := make(chan struct{})
		g.Go(func() error { defer close(logDone); return s.log.Run(ctx) })
		if s.signer != nil {
			g.Go(func() error { return s.signer.run(ctx, logDone) })
		}
	}
	if s.revoc != nil {
		g.Go(func() error { return s.revoc.Run(ctx) })
	}
	g.Go(func() error { return s.server.Serve(ctx, lis) })
	return g.Wait()
}
