package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

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
				DecisionPath: pf.decisionPath, Logger: newLogger(cmd),
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
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8089", "address to serve the console on (keep it on loopback: it has no login of its own)")
	return cmd
}
