package main

import (
	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/internal/buildinfo"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "sigil",
		Short:         "Workload identity (SPIFFE), mTLS certificates and authorization for services",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			_, err := logOptions(cmd)
			return err
		},
	}
	addLogFlags(root)
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
		newFederationCmd,
		newSVIDCmd,
		newJWTCmd,
		newVersionCmd,
		newConsoleCmd,
		newExplainCmd,
	} {
		root.AddCommand(add())
	}
	// --version prints what `sigil version` does.
	root.Version = buildinfo.Read().String()
	root.SetVersionTemplate("{{.Version}}\n")
	markUsageErrors(root)
	return root
}
