package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/internal/buildinfo"
)

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the module version, commit and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			info := buildinfo.Read()
			if output != outTable {
				return printData(cmd.OutOrStdout(), output, info)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), info)
			return err
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}
