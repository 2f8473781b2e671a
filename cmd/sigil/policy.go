package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/authz/policytool"
	"github.com/sigilhq/sigil/authz/replay"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Test, evaluate and replay policies"}
	cmd.AddCommand(newPolicyTestCmd(), newPolicyEvalCmd(), newPolicyReplayCmd())
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
	var inputPath, policyDir, path, output string
	cmd := &cobra.Command{
		Use:   "eval --policy DIR --input CHECKREQUEST.json",
		Short: "Decide one ext_authz CheckRequest (protojson) with a policy directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
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
			if output == outTable {
				tw := newTable(cmd.OutOrStdout())
				fmt.Fprintln(tw, "ALLOWED\tREASON\tREVISION\tDETAIL")
				fmt.Fprintf(tw, "%v\t%s\t%s\t%s\n", d.Allowed, d.Reason, orDash(d.Revision), orDash(d.Detail))
				if err := tw.Flush(); err != nil {
					return err
				}
			} else if err := printData(cmd.OutOrStdout(), output, summary); err != nil {
				return err
			}
			if !d.Allowed {
				return fmt.Errorf("denied (%s)", d.Reason)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&inputPath, "input", "", "CheckRequest in protojson")
	addOutputFlagDefault(cmd, &output, outJSON)
	cmd.Flags().StringVar(&policyDir, "policy", "", "policy directory")
	cmd.Flags().StringVar(&path, "path", "", "decision path (default data.envoy.authz.allow)")
	return cmd
}

func newPolicyReplayCmd() *cobra.Command {
	var logPath, policyDir, path, output string
	var skipBody bool
	cmd := &cobra.Command{
		Use:   "replay --log decisions.log --policy DIR",
		Short: "Report what a candidate policy would decide differently over a recorded decision log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if logPath == "" || policyDir == "" {
				return errors.New("policy replay: --log and --policy are required")
			}
			p, err := policysrc.Dir{Path: policyDir}.Load(cmd.Context())
			if err != nil {
				return err
			}
			prep, err := engine.Prepare(cmd.Context(), p, path)
			if err != nil {
				return err
			}
			f, err := os.Open(logPath)
			if err != nil {
				return fmt.Errorf("policy replay: %w", err)
			}
			defer f.Close()
			rep, err := replay.Run(cmd.Context(), f, prep, input.Options{SkipBody: skipBody})
			if err != nil {
				return err
			}
			if output != outTable {
				return printData(cmd.OutOrStdout(), output, newReplayView(rep))
			}
			return rep.Write(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&logPath, "log", "", "decision log (JSON lines) to replay")
	cmd.Flags().StringVar(&policyDir, "policy", "", "candidate policy directory")
	cmd.Flags().StringVar(&path, "path", "", "decision path (default data.envoy.authz.allow)")
	cmd.Flags().BoolVar(&skipBody, "skip-request-body-parse", false, "do not parse request bodies")
	addOutputFlag(cmd, &output)
	return cmd
}

// replayView is a replay report as -o json|yaml prints it.
type replayView struct {
	Candidate     string       `json:"candidate_revision"`
	Lines         int          `json:"lines"`
	Replayed      int          `json:"replayed"`
	Unchanged     int          `json:"unchanged"`
	NotReplayable int          `json:"not_replayable"`
	Invalid       int          `json:"invalid"`
	Changes       []changeView `json:"changes"`
}

type changeView struct {
	Seq         uint64 `json:"seq"`
	DecisionID  string `json:"decision_id"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Before      string `json:"before"`
	After       string `json:"after"`
	AfterReason string `json:"after_reason"`
}

func newReplayView(rep replay.Report) replayView {
	v := replayView{Candidate: rep.Candidate, Lines: rep.Lines, Replayed: rep.Replayed, Unchanged: rep.Unchanged,
		NotReplayable: rep.NotReplayable, Invalid: rep.Invalid, Changes: []changeView{}}
	for _, c := range rep.Changes {
		v.Changes = append(v.Changes, changeView{Seq: c.Seq, DecisionID: c.DecisionID, Source: c.Source, Destination: c.Destination,
			Method: c.Method, Path: c.Path, Before: c.Before, After: c.After, AfterReason: string(c.AfterReason)})
	}
	return v
}
