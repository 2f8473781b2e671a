package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify decision logs"}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditTailCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE...",
		Short: "Check a decision log's hash chain; files oldest first (decisions.log.2 decisions.log.1 decisions.log)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v decisionlog.Verifier
			for _, name := range args {
				f, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
				err = v.Check(name, f)
				f.Close()
				if err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "ok: %d decisions, chain intact", v.Lines)
			if v.FirstSeq > 1 {
				fmt.Fprintf(out, " (starts at seq %d; earlier decisions are in older files)", v.FirstSeq)
			}
			fmt.Fprintln(out)
			return nil
		},
	}
}

func newAuditTailCmd() *cobra.Command {
	var n int
	var follow bool
	cmd := &cobra.Command{
		Use:   "tail FILE",
		Short: "Print the last decisions of a log in a readable form",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("audit tail: %w", err)
			}
			defer f.Close()
			return tailDecisions(cmd.Context(), cmd.OutOrStdout(), f, n, follow)
		},
	}
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "number of decisions to show")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing decisions as they are written")
	return cmd
}

func tailDecisions(ctx context.Context, w io.Writer, f *os.File, n int, follow bool) error {
	r := bufio.NewReaderSize(f, 64*1024)
	var ring []string
	var partial string
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			partial = line
			break
		}
		if err != nil {
			return err
		}
		ring = append(ring, line[:len(line)-1])
		if len(ring) > n {
			ring = ring[1:]
		}
	}
	for _, l := range ring {
		fmt.Fprintln(w, formatDecision(l))
	}
	if !follow {
		return nil
	}
	for {
		line, err := r.ReadString('\n')
		partial += line
		if err == io.EOF {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(w, formatDecision(partial[:len(partial)-1]))
		partial = ""
	}
}

func formatDecision(line string) string {
	e, err := decisionlog.Decode([]byte(line))
	if err != nil {
		return "!! not a valid decision line: " + err.Error()
	}
	src, dst := e.Source, e.Destination
	if src == "" {
		src = "-"
	}
	if dst == "" {
		dst = "-"
	}
	s := fmt.Sprintf("%s %6d %-5s %-16s %s -> %s %s %s (%s)", e.Time.Format(time.RFC3339Nano), e.Seq, e.Result, e.Reason, src, dst, e.Method, e.Path, time.Duration(e.LatencyNS))
	if e.DryRun {
		s += " [dry-run]"
	}
	if e.Shadow != nil && e.Shadow.Disagree {
		s += " [shadow: " + e.Shadow.Result + "]"
	}
	return s
}
