package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/sigilhq/sigil/ca/caconfig"
)

// Default local addresses of `sigil dev`.
const (
	devServerAddress = "127.0.0.1:8443"
	devHealthAddress = "127.0.0.1:9988"
)

func newDevCmd() *cobra.Command {
	var dir, trustDomain, serverAddress, healthAddress, authzAddress string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run CA, agent and authz on this machine with an embedded store",
		Long: `Run Sigil on one machine: a CA with a self-signed root and the embedded
SQLite store under --dir, its admin socket at DIR/admin.sock. Running it again
resumes with the same root and entries. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			started := time.Now()
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("dev dir: %w", err)
			}
			unlock, err := lockDir(dir)
			if err != nil {
				return err
			}
			defer unlock()
			cfg, err := caconfig.File{
				TrustDomain:   trustDomain,
				DataDir:       dir,
				ServerAddress: serverAddress,
				HealthAddress: healthAddress,
			}.Validate()
			if err != nil {
				return err
			}
			logger := newLogger(cmd)
			reg := newRegistry()
			ctx := cmd.Context()
			stack, err := buildCA(ctx, cfg, logger, reg)
			if err != nil {
				return err
			}
			defer stack.Close()

			runAuthz, err := devAuthzAt(dir, authzAddress, logger, reg)
			if err != nil {
				return err
			}
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return stack.Run(ctx) })
			g.Go(func() error { return runAuthz(ctx) })
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Sigil dev is running (started in %s).\n", time.Since(started).Round(time.Millisecond))
			fmt.Fprintf(out, "  trust domain   %s\n", cfg.TrustDomain.Name())
			fmt.Fprintf(out, "  state          %s\n", dir)
			fmt.Fprintf(out, "  admin socket   %s\n", cfg.AdminSocket)
			fmt.Fprintf(out, "  ca server      %s (mTLS)\n", serverAddress)
			fmt.Fprintf(out, "  authz          %s (Envoy ext_authz v3), policies in %s, decision log %s\n", authzAddress, filepath.Join(dir, "policies"), filepath.Join(dir, "decisions.log"))
			fmt.Fprintf(out, "  health         http://%s/live  /ready  /metrics\n", healthAddress)
			fmt.Fprintf(out, "Try:\n  sigil bundle show --format pem\n  sigil entry create --spiffe-id spiffe://%s/me --parent-id spiffe://%s/sigil/agent/dev --selector unix:uid:%d\n  sigil entry list\nCtrl-C stops.\n",
				cfg.TrustDomain.Name(), cfg.TrustDomain.Name(), os.Getuid())
			err = g.Wait()
			logger.Info("sigil dev stopped")
			return err
		},
	}
	home, _ := os.UserHomeDir()
	cmd.Flags().StringVar(&dir, "dir", filepath.Join(home, ".sigil", "dev"), "directory holding the dev state")
	cmd.Flags().StringVar(&trustDomain, "trust-domain", "example.org", "trust domain")
	cmd.Flags().StringVar(&serverAddress, "server-address", devServerAddress, "CA server (mTLS) address")
	cmd.Flags().StringVar(&healthAddress, "health-address", devHealthAddress, "health and metrics address")
	cmd.Flags().StringVar(&authzAddress, "authz-address", "127.0.0.1:9191", "ext_authz gRPC address")
	return cmd
}

// lockDir takes an exclusive lock on DIR/dev.lock so that a second
// `sigil dev` on the same directory says so instead of fighting the first.
func lockDir(dir string) (func(), error) {
	path := filepath.Join(dir, "dev.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("sigil dev is already running on %s (lock %s is held); stop it first or use another --dir", dir, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
