package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/authz/policytool"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Test, evaluate and replay policies"}
	cmd.AddCommand(newPolicyTestCmd(), newPolicyEvalCmd())
	return cmd
}

func newPolicyTestCmd() *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "test DIR...",
		Short: "Run the Rego tests (test_* rules in *_test.rego) under the given paths",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := policytool.Test(cmd.Context(), cmd.OutOrStdout(), args, verbose)
			return err
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every test")
	return cmd
}

func newPolicyEvalCmd() *cobra.Command {
	var inputPath, policyDir, path string
	cmd := &cobra.Command{
		Use:   "eval --policy DIR --input CHECKREQUEST.json",
		Short: "Decide one ext_authz CheckRequest (protojson) with a policy directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inputPath == "" || policyDir == "" {
				return errors.New("policy eval: --input and --policy are required")
			}
			req, err := policytool.ReadCheckRequest(inputPath)
			if err != nil {
				return err
			}
			d, err := policytool.Eval(cmd.Context(), policyDir, path, req)
			if err != nil {
				return err
			}
			summary := map[string]any{"allowed": d.Allowed, "reason": d.Reason, "detail": d.Detail, "revision": d.Revision}
			if d.Object {
				summary["http_status"] = d.HTTPStatus
				summary["headers"] = d.Headers
				summary["body"] = d.Body
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(summary); err != nil {
				return err
			}
			if !d.Allowed {
				return fmt.Errorf("denied (%s)", d.Reason)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&inputPath, "input", "", "CheckRequest in protojson")
	cmd.Flags().StringVar(&policyDir, "policy", "", "policy directory")
	cmd.Flags().StringVar(&path, "path", "", "decision path (default data.envoy.authz.allow)")
	return cmd
}
