package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca/caconfig"
	"github.com/sigilhq/sigil/ca/server"

	"github.com/sigilhq/sigil/console"
)

func newConsoleCmd() *cobra.Command {
	var (
		pf     policyFlags
		listen string
	)
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the read-only web console on this machine, over the CA's local admin socket",
		Long: `Console serves Sigil's web console on a local address (127.0.0.1 by
default) and prints its URL. It reads entries, agents, the CA key journal and
the bundle over the local admin socket. Decisions and the access graph come
from a decision log file on this machine (--decision-log, or the file in
--authz-config): run it on the authz host. With --policy (or --authz-config)
each decision's page explains which rules decided it.`,
		Example: `  sigil console --policy ~/.sigil/dev/policies --decision-log ~/.sigil/dev/decisions.log`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loopbackOnly(listen); err != nil {
				return err
			}
			if err := pf.resolve(); err != nil {
				return err
			}
			client, done, err := dialAdmin(cmd)
			if err != nil {
				return err
			}
			defer done()
			srv, err := console.New(console.Config{
				Admin: client, DecisionLog: pf.decisionLog, Policy: pf.policy(),
				DecisionPath: pf.decisionPath, Input: pf.input, Logger: newLogger(cmd),
			})
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("console: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "console: http://%s/\n", lis.Addr())
			return console.Serve(cmd.Context(), lis, srv.Handler(), nil)
		},
	}
	addAdminSocketFlag(cmd)
	pf.add(cmd)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8089", "loopback address to serve the console on (it has no login of its own)")
	return cmd
}

// loopbackOnly refuses a --listen address other machines could reach:
// the local console has no login of its own.
func loopbackOnly(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return usageErrorf("--listen %q: %v", listen, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usageErrorf("--listen %q: the local console has no login, so it serves on loopback only (127.0.0.1 or ::1); for a console others can reach, set console_address in ca.yaml (HTTPS for admin SVIDs)", listen)
}

// caConsole is the web console `sigil ca run` serves on console_address:
// HTTPS with the CA's own SVID, open only to clients presenting an admin
// X509-SVID, reading the admin API over the CA's local admin socket. It
// has no decision log or policy: those live on the authz host.
func caConsole(ctx context.Context, cfg caconfig.Config, stack *caStack, logger *slog.Logger) (func(context.Context) error, error) {
	conn, err := grpc.NewClient("unix://"+cfg.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	srv, err := console.New(console.Config{
		Admin:  adminv1.NewAdminClient(conn),
		Logger: logger,
		Authorize: func(r *http.Request) error {
			if r.TLS == nil {
				return errors.New("not a TLS connection")
			}
			_, err := stack.admin.AuthenticateTLS(r.Context(), *r.TLS)
			return err
		},
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.ConsoleAddress)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("console: %w", err)
	}
	logger.Info("console listening", "address", lis.Addr().String())
	tc := server.TLSConfig(ctx, stack.CA)
	tc.NextProtos = []string{"h2", "http/1.1"}
	return func(ctx context.Context) error {
		defer conn.Close()
		return console.Serve(ctx, lis, srv.Handler(), tc)
	}, nil
}
