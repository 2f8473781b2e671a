package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Make join tokens that let an agent attest once"}
	addAdminSocketFlag(cmd)
	cmd.AddCommand(newTokenCreateCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var ttl time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time join token; only the token goes to standard output",
		Example: `  TOKEN=$(sigil token create --ttl 10m)
  sigil agent run --config agent.yaml --join-token "$TOKEN"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if ttl <= 0 {
				return usageErrorf("--ttl %s: must be positive", ttl)
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.CreateJoinToken(cmd.Context(), &adminv1.CreateJoinTokenRequest{Ttl: durationpb.New(ttl)})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				if _, err := fmt.Fprintln(cmd.OutOrStdout(), resp.GetToken()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "join token expires at %s\n", fmtTime(resp.GetExpiresAt()))
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "how long the token stays usable")
	addOutputFlag(cmd, &output)
	return cmd
}
