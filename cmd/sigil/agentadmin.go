package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/adminclient"
)

// newAgentCmd is `sigil agent`: the admin commands on attested agents
// (list, evict, ban). `agent run` is added beside them.
func newAgentCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Run the node agent and manage attested agents"}
	cmd.AddCommand(newAgentListCmd(), newAgentEvictCmd(), newAgentBanCmd())
	cmd.AddCommand(newAgentRunCmd())
	return cmd
}

func newAgentListCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List attested agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp := &adminv1.ListAgentsResponse{}
				err := adminclient.Pages(cmd.Context(), func(ctx context.Context, token string) (*adminv1.ListAgentsResponse, error) {
					return c.ListAgents(ctx, &adminv1.ListAgentsRequest{PageSize: adminPageSize, PageToken: token})
				}, func(p *adminv1.ListAgentsResponse) error {
					resp.Agents = append(resp.Agents, p.GetAgents()...)
					return nil
				})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "ID\tATTESTATION\tSERIAL\tEXPIRES\tBANNED\tSELECTORS")
				for _, a := range resp.GetAgents() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", a.GetId(), a.GetAttestationType(), orDash(a.GetSerial()),
						fmtTime(a.GetExpiresAt()), a.GetBanned(), orDash(strings.Join(a.GetSelectors(), ",")))
				}
				return tw.Flush()
			})
		},
	}
	addAdminSocketFlag(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func newAgentEvictCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "evict ID",
		Short: "Forget an agent: it must attest again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				if _, err := c.EvictAgent(cmd.Context(), &adminv1.EvictAgentRequest{Id: args[0]}); err != nil {
					return err
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "evicted agent %s\n", args[0])
				return err
			})
		},
	}
	addAdminSocketFlag(cmd)
	return cmd
}

func newAgentBanCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ban ID",
		Short: "Ban an agent: it can neither renew its SVID nor attest again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				if _, err := c.BanAgent(cmd.Context(), &adminv1.BanAgentRequest{Id: args[0]}); err != nil {
					return err
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "banned agent %s\n", args[0])
				return err
			})
		},
	}
	addAdminSocketFlag(cmd)
	return cmd
}
