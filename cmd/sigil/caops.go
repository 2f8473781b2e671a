package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
)

// addCAOpsCommands adds the operator commands on the CA's signing keys
// (status, prepare, activate, taint, revoke) to the `ca` command. Each
// talks to a running CA over its admin socket.
func addCAOpsCommands(ca *cobra.Command) {
	ca.AddCommand(newCAStatusCmd(), newCAPrepareCmd(), newCAActivateCmd(),
		newCAKeyCmd("taint", "Taint a signing key: every SVID it signed is re-issued at once"),
		newCAKeyCmd("revoke", "Revoke a tainted signing key: it leaves the trust bundle"), newCARootCmd())
}

// newCARootCmd is `ca root`, with `ca root rotate`: one command starts the
// whole rotation, because its waits (the bundle reaching agents and peers,
// every agent renewing, the old root's keys expiring) are the CA's to
// measure, not an operator's to time; `ca status` shows where it stands.
func newCARootCmd() *cobra.Command {
	root := &cobra.Command{Use: "root", Short: "Rotate the CA's self-signed root"}
	var output string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Start a root rotation: new root prepared and published now, activated and the old root retired by the CA",
		Long: "Start a root rotation (upstream self_signed). A new root is made and a signing key of it is published\n" +
			"in the bundle now; the CA activates it once the bundle had bundle_refresh_hint to reach agents and\n" +
			"federated peers and every agent renewed its SVID (agents persist the new root as bootstrap trust),\n" +
			"and retires the old root when the last key it issued expires. `sigil ca status` shows the root journal.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.RotateRoot(cmd.Context(), &adminv1.RotateRootRequest{})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				return printRootJournal(cmd, resp.GetRoot())
			})
		},
	}
	addAdminSocketFlag(rotate)
	addOutputFlag(rotate, &output)
	root.AddCommand(rotate)
	return root
}

// printRootJournal shows each root's state and when it reached each one.
func printRootJournal(cmd *cobra.Command, roots ...*adminv1.CARoot) error {
	tw := newTable(cmd.OutOrStdout())
	fmt.Fprintln(tw, "ROOT ID\tSTATE\tNOT AFTER\tPREPARED\tPUBLISHED\tACTIVATED\tRETIRED\tGONE\tWAITING FOR")
	for _, r := range roots {
		id := r.GetId()
		if len(id) > 16 {
			id = id[:16]
		}
		waiting := r.GetWaiting()
		if waiting == "" {
			waiting = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, r.GetState(), fmtTime(r.GetNotAfter()), fmtTime(r.GetPrepared()),
			fmtTime(r.GetPublished()), fmtTime(r.GetActivated()), fmtTime(r.GetRetired()), fmtTime(r.GetGone()), waiting)
	}
	return tw.Flush()
}

func addKindFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVar(dst, "kind", "x509", "key family: x509 or jwt")
}

func parseKind(s string) (adminv1.KeyKind, error) {
	switch s {
	case "x509":
		return adminv1.KeyKind_KEY_KIND_X509, nil
	case "jwt":
		return adminv1.KeyKind_KEY_KIND_JWT, nil
	}
	return 0, usageErrorf("--kind %q: want x509 or jwt", s)
}

func kindName(k adminv1.KeyKind) string {
	switch k {
	case adminv1.KeyKind_KEY_KIND_X509:
		return "x509"
	case adminv1.KeyKind_KEY_KIND_JWT:
		return "jwt"
	}
	return "?"
}

func newCAStatusCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the CA's signing keys and where each stands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				resp, err := c.CAStatus(cmd.Context(), &adminv1.CAStatusRequest{})
				if err != nil {
					return err
				}
				if output != outTable {
					return printData(cmd.OutOrStdout(), output, resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "trust domain: %s\n", resp.GetTrustDomain())
				if err := printKeys(cmd, resp.GetKeys()...); err != nil {
					return err
				}
				printRekey(cmd, "re-key in progress", resp.GetRekey())
				printRekey(cmd, "last re-key", resp.GetLastRekey())
				printUpstream(cmd, resp.GetUpstream())
				if err := printRoots(cmd, resp.GetUpstreamRoots()); err != nil {
					return err
				}
				if len(resp.GetRoots()) == 0 {
					return nil
				}
				fmt.Fprintln(cmd.OutOrStdout(), "\nroot journal:")
				return printRootJournal(cmd, resp.GetRoots()...)
			})
		},
	}
	addAdminSocketFlag(cmd)
	addOutputFlag(cmd, &output)
	return cmd
}

func printKeys(cmd *cobra.Command, keys ...*adminv1.CAKey) error {
	tw := newTable(cmd.OutOrStdout())
	fmt.Fprintln(tw, "KIND\tKEY ID\tSTATE\tNOT BEFORE\tNOT AFTER\tTAINTED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", kindName(k.GetKind()), k.GetId(), k.GetState(),
			fmtTime(k.GetNotBefore()), fmtTime(k.GetNotAfter()), k.GetTainted())
	}
	return tw.Flush()
}

// printRekey shows a re-key after an SVID revocation and how long each
// phase took (or is taking).
func printRekey(cmd *cobra.Command, title string, r *adminv1.CARekey) {
	if r == nil {
		return
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "\n%s (after an svid revocation): phase %s, new key %s, old keys %s\n", title, r.GetPhase(), r.GetNewKeyId(), strings.Join(r.GetOldKeyIds(), ","))
	since := func(a, b *timestamppb.Timestamp) string {
		if a == nil || b == nil {
			return "-"
		}
		return b.AsTime().Sub(a.AsTime()).Round(time.Millisecond).String()
	}
	end := r.GetDone()
	if end == nil {
		end = timestamppb.Now()
	}
	fmt.Fprintf(w, "  started %s; published → activated %s; activated → old keys revoked %s; total %s\n",
		fmtTime(r.GetStarted()), since(r.GetPublished(), r.GetActivated()), since(r.GetActivated(), r.GetDone()), since(r.GetStarted(), end))
	if r.GetReason() != "" {
		fmt.Fprintf(w, "  aborted: %s\n", r.GetReason())
	}
}

// printUpstream shows whether a networked upstream (step-ca) answers: while
// it does not, rotation waits and the active key keeps signing.
func printUpstream(cmd *cobra.Command, u *adminv1.CAUpstream) {
	if u == nil {
		return
	}
	w := cmd.OutOrStdout()
	if u.GetConsecutiveFailures() == 0 {
		fmt.Fprintf(w, "\nupstream %s %s: ok (last success %s)\n", u.GetType(), u.GetTarget(), fmtTime(u.GetLastSuccess()))
		return
	}
	fmt.Fprintf(w, "\nupstream %s %s: FAILING (%d requests in a row, the last at %s; last success %s): %s\n",
		u.GetType(), u.GetTarget(), u.GetConsecutiveFailures(), fmtTime(u.GetLastFailure()), fmtTime(u.GetLastSuccess()), u.GetLastError())
	fmt.Fprintln(w, "  rotation waits for it; the active key keeps signing until it expires (see NOT AFTER above)")
}

// printRoots lists the upstream roots: agents' bootstrap trust, not the
// bundle's authorities.
func printRoots(cmd *cobra.Command, roots [][]byte) error {
	fmt.Fprintln(cmd.OutOrStdout(), "\nupstream roots (bootstrap trust for agents; not in the bundle):")
	tw := newTable(cmd.OutOrStdout())
	fmt.Fprintln(tw, "SUBJECT\tSHA-256\tNOT AFTER")
	for _, der := range roots {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("upstream root: %w", err)
		}
		sum := sha256.Sum256(der)
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Subject, hex.EncodeToString(sum[:]), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func newCAPrepareCmd() *cobra.Command {
	return newCARotationCmd("prepare", "Make the next signing key now and publish it in the bundle",
		func(ctx context.Context, c adminv1.AdminClient, k adminv1.KeyKind) (*adminv1.CAKey, error) {
			resp, err := c.PrepareCA(ctx, &adminv1.PrepareCARequest{Kind: k})
			return resp.GetKey(), err
		})
}

func newCAActivateCmd() *cobra.Command {
	return newCARotationCmd("activate", "Make the prepared key the signing one now",
		func(ctx context.Context, c adminv1.AdminClient, k adminv1.KeyKind) (*adminv1.CAKey, error) {
			resp, err := c.ActivateCA(ctx, &adminv1.ActivateCARequest{Kind: k})
			return resp.GetKey(), err
		})
}

// newCARotationCmd makes `ca prepare` or `ca activate`: one admin call for a
// key kind, printing the key it returns.
func newCARotationCmd(use, short string,
	call func(context.Context, adminv1.AdminClient, adminv1.KeyKind) (*adminv1.CAKey, error)) *cobra.Command {
	var kind string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := parseKind(kind)
			if err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				key, err := call(cmd.Context(), c, k)
				if err != nil {
					return err
				}
				return printKeys(cmd, key)
			})
		},
	}
	addAdminSocketFlag(cmd)
	addKindFlag(cmd, &kind)
	return cmd
}

// newCAKeyCmd makes `ca taint KEY_ID` or `ca revoke KEY_ID`.
func newCAKeyCmd(op, short string) *cobra.Command {
	var kind string
	cmd := &cobra.Command{
		Use:   op + " KEY_ID",
		Short: short,
		Long:  short + ".\nKEY_ID is shown by `sigil ca status`.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := parseKind(kind)
			if err != nil {
				return err
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				var err error
				if op == "taint" {
					_, err = c.TaintCA(cmd.Context(), &adminv1.TaintCARequest{Kind: k, KeyId: args[0]})
				} else {
					_, err = c.RevokeCA(cmd.Context(), &adminv1.RevokeCARequest{Kind: k, KeyId: args[0]})
				}
				if err != nil {
					return err
				}
				past := map[string]string{"taint": "tainted", "revoke": "revoked"}[op]
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %s key %s\n", past, kindName(k), args[0])
				return err
			})
		},
	}
	addAdminSocketFlag(cmd)
	addKindFlag(cmd, &kind)
	return cmd
}
