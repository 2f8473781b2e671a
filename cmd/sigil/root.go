package main

import (
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "sigil",
		Short:         "Workload identity (SPIFFE), mTLS certificates and authorization for services",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	for _, add := range []func() *cobra.Command{
		newDevCmd,
		newCACmd,
		newAuthzCmd,
		newPolicyCmd,
		newAuditCmd,
		newEntryCmd,
		newTokenCmd,
		newAgentCmd,
		newBundleCmd,
		newSVIDCmd,
		newJWTCmd,
	} {
		root.AddCommand(add())
	}
	markUsageErrors(root)
	return root
}
