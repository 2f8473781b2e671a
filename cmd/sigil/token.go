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
	var output, spiffeID string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time join token; only the token goes to standard output",
		Long: `Create a one-time join token; only the token goes to standard output.

With --spiffe-id the token's agent also gets that SPIFFE ID as a node alias
(a node-alias entry with the selector join_token:spiffe_id:<ID> is made if
missing): entries whose parent is that ID reach the agent, without knowing
the agent's own ID in advance.`,
		Example: `  TOKEN=$(sigil token create --ttl 10m)
  sigil agent run --config agent.yaml --join-token "$TOKEN"

  TOKEN=$(sigil token create --spiffe-id spiffe://example.org/node/db-1)
  sigil entry create --parent-id spiffe://example.org/node/db-1 --spiffe-id spiffe://example.org/db --selector unix:uid:999`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if ttl <= 0 {
				return usageErrorf("--ttl %s: must be positive", ttl)
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.CreateJoinToken(cmd.Context(), &adminv1.CreateJoinTokenRequest{Ttl: durationpb.New(ttl), SpiffeId: spiffeID})
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
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "SPIFFE ID the token's agent gets as a node alias")
	addOutputFlag(cmd, &output)
	return cmd
}
