package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/authz/authzconfig"
	"github.com/sigilhq/sigil/authz/service"
	"github.com/sigilhq/sigil/internal/health"
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
			cfg, err := authzconfig.Load(configPath)
			if err != nil {
				return err
			}
			if _, set := os.LookupEnv("GOGC"); !set {
				debug.SetGCPercent(cfg.GCPercent)
			}
			logger, reg := newLogger(cmd), newRegistry()
			svc, err := service.New(service.Config{Config: cfg, Metrics: reg, Logger: logger})
			if err != nil {
				return err
			}
			runs, err := withHealth(health.Config{Address: cfg.HealthAddress, Ready: svc.Ready, Gatherer: reg, PProf: cfg.PProf, Logger: logger}, svc.Run)
			if err != nil {
				return err
			}
			return runAll(cmd.Context(), runs...)
		},
	}
	run.Flags().StringVar(&configPath, "config", "authz.yaml", "authz configuration file (YAML)")
	cmd.AddCommand(run)
	return cmd
}

// devAuthz makes authz for `sigil dev`, serving lis: policies from
// dir/policies (seeded from the embedded policies/examples on first
// start), decision log at dir/decisions.log, metrics on reg.
func devAuthz(dir string, lis net.Listener, logger *slog.Logger, reg prometheus.Registerer) (*service.Service, error) {
	pdir := filepath.Join(dir, "policies")
	if err := seedPolicies(pdir); err != nil {
		return nil, err
	}
	cfg, err := authzconfig.File{
		Policy:      &authzconfig.PolicyFile{Dir: pdir},
		DecisionLog: authzconfig.DecisionLogFile{File: filepath.Join(dir, "decisions.log"), MaxBytes: 64 << 20},
	}.Validate()
	if err != nil {
		return nil, err
	}
	return service.New(service.Config{Config: cfg, Listener: lis, Metrics: reg, Logger: logger.With("component", "authz")})
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
