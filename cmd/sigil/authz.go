package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/authz/authzconfig"
	"github.com/sigilhq/sigil/authz/service"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/health"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/policies"
)

func newAuthzCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "authz", Short: "Run the ext_authz service, or send it one Check"}
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
	cmd.AddCommand(run, newAuthzCheckCmd())
	return cmd
}

// devAuthz makes authz for `sigil dev`, serving lis: policies from
// dir/policies (seeded from the embedded policies/examples on first
// start), decision log at dir/decisions.log, metrics on reg.
func devAuthz(dir string, td spiffeid.TrustDomain, lis net.Listener, logger *slog.Logger, reg prometheus.Registerer) (*service.Service, error) {
	pdir := filepath.Join(dir, "policies")
	if err := seedPolicies(pdir); err != nil {
		return nil, err
	}
	cfg, err := authzconfig.File{
		Policy: &authzconfig.PolicyFile{Dir: pdir},
		DecisionLog: authzconfig.DecisionLogFile{
			File: filepath.Join(dir, "decisions.log"), MaxBytes: 64 << 20,
			// Signed by authz's own SVID from the dev agent (an entry dev
			// creates, see ensureDevAuthzEntry), every 2 s rather than 10
			// so that `sigil audit verify` covers a dev session at once.
			Checkpoints: &authzconfig.CheckpointsFile{
				WorkloadAPISocket: "unix://" + filepath.Join(dir, "agent.sock"),
				SignerID:          devAuthzID(td).String(),
				Interval:          "2s",
			},
		},
		// Deny revoked peer certificates with the CRLs the dev agent
		// serves Envoy.
		Revocation: &authzconfig.RevocationFile{SDSSocket: "unix://" + filepath.Join(dir, "agent.sock")},
	}.Validate()
	if err != nil {
		return nil, err
	}
	return service.New(service.Config{Config: cfg, Listener: lis, Metrics: reg, Logger: logger.With("component", "authz")})
}

// devAuthzID is the SPIFFE ID of authz in `sigil dev`.
func devAuthzID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "sigil-dev", "authz")
}

// ensureDevAuthzEntry registers authz of `sigil dev` under the dev agent:
// this process's uid and executable. Another `sigil` run by the same user
// (sigil svid fetch) matches it too and sees this SVID beside its own.
func ensureDevAuthzEntry(ctx context.Context, st store.Entries, td spiffeid.TrustDomain, agentID spiffeid.ID) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dev authz entry: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return fmt.Errorf("dev authz entry: %w", err)
	}
	id := devAuthzID(td).String()
	e := store.Entry{SPIFFEID: id, ParentID: agentID.String(), Selectors: []selector.Selector{
		{Type: "unix", Value: "path:" + exe},
		{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())},
	}}
	old, err := st.ListEntries(ctx, store.EntryFilter{SPIFFEID: id})
	if err != nil {
		return fmt.Errorf("dev authz entry: %w", err)
	}
	for _, o := range old {
		if o.ParentID == e.ParentID && slices.Equal(o.Selectors, e.Selectors) {
			return nil
		}
		// The binary moved (go run, a new build): replace the entry.
		if _, err := st.DeleteEntry(ctx, "sigil-dev", o.ID); err != nil {
			return fmt.Errorf("dev authz entry: %w", err)
		}
	}
	if _, err := st.CreateEntries(ctx, "sigil-dev", []store.Entry{e}); err != nil {
		return fmt.Errorf("dev authz entry: %w", err)
	}
	return nil
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
