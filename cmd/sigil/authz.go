package main

import "github.com/spf13/cobra"

// Placeholders until the authz work lands; replaced wholesale.
func newAuthzCmd() *cobra.Command {
	return &cobra.Command{Use: "authz", Short: "Run the ext_authz service"}
}
func newPolicyCmd() *cobra.Command {
	return &cobra.Command{Use: "policy", Short: "Test, evaluate and replay policies"}
}
func newAuditCmd() *cobra.Command {
	return &cobra.Command{Use: "audit", Short: "Read and verify decision logs"}
}
