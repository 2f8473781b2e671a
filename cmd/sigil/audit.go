package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/authz/decisionlog"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify decision logs"}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditTailCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var checkpoints, bundle, signerID, output string
	var allowUnsigned bool
	cmd := &cobra.Command{
		Use:   "verify FILE...",
		Short: "Check a decision log's hash chain against its signed checkpoints; files oldest first (decisions.log.2 decisions.log.1 decisions.log)",
		Long: `Check a decision log's hash chain against its signed checkpoints.

Every line must link to the one before; the first line must be seq 1 or a
rotation marker whose previous line a checkpoint covers; every checkpoint
must be signed by an identity that chains to the trust bundle (--bundle) and
match the line it names; the log must reach the latest checkpoint. Lines
written after the latest checkpoint are reported as not yet covered.

Checkpoints default to the newest file's name plus ".checkpoints". Keep a
copy of the checkpoints away from the log's host: whoever can rewrite both
can cut both back to an earlier checkpoint.

--allow-unsigned checks a log without checkpoints (or an empty one). That
proves only that no line was changed on its own; anyone who can write the
file can cut its end or start or recompute every hash.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			opts := decisionlog.VerifyOptions{SignerID: signerID, AllowUnsigned: allowUnsigned}
			if bundle != "" {
				roots, err := loadBundle(bundle)
				if err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
				opts.Roots = roots
			}
			if checkpoints == "" {
				c := rotatedSuffix.ReplaceAllString(args[len(args)-1], "") + ".checkpoints"
				if _, err := os.Stat(c); err == nil {
					checkpoints = c
				}
			}
			if checkpoints != "" && bundle == "" {
				// The CA's current bundle over the admin API: the log's
				// directory's admin.sock (sigil dev's) unless one is named.
				if f := cmd.Flag(adminSocketFlag); !f.Changed && os.Getenv("SIGIL_ADMIN_SOCKET") == "" {
					if sock := filepath.Join(filepath.Dir(args[len(args)-1]), "admin.sock"); isSocket(sock) {
						_ = f.Value.Set(sock)
					}
				}
				roots, err := adminRoots(cmd)
				if err != nil {
					return fmt.Errorf("audit verify: checkpoints need the trust bundle their signer chains to: --bundle FILE, or the CA's admin socket (%s): %w", adminSocket(cmd), err)
				}
				opts.Roots = roots
			}
			v := decisionlog.NewVerifier(opts)
			if checkpoints != "" {
				if err := checkFile(checkpoints, v.AddCheckpoints); err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
			}
			for _, name := range args {
				if err := checkFile(name, v.Check); err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
			}
			rep, err := v.Finish()
			if err != nil {
				return fmt.Errorf("audit verify: %w", err)
			}
			if output != outTable {
				return printData(cmd.OutOrStdout(), output, newVerifyView(rep, checkpoints))
			}
			writeVerifyReport(cmd.OutOrStdout(), rep, checkpoints)
			return nil
		},
	}
	cmd.Flags().StringVar(&checkpoints, "checkpoints", "", "signed checkpoints file (default: the newest log file + .checkpoints, if present)")
	cmd.Flags().StringVar(&bundle, "bundle", "", "PEM trust bundle the checkpoint signer must chain to (default: the CA's, from the admin socket; the log's directory's admin.sock when there is one, as in sigil dev)")
	addAdminSocketFlag(cmd)
	cmd.Flags().StringVar(&signerID, "signer-id", "", "accept checkpoints signed only by this SPIFFE ID")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "accept a log without checkpoints; proves only that no line was edited on its own")
	addOutputFlag(cmd, &output)
	return cmd
}

// rotatedSuffix is the ".N" of a rotated log file.
var rotatedSuffix = regexp.MustCompile(`\.[0-9]+$`)

func checkFile(name string, check func(string, io.Reader) error) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return check(name, f)
}

func isSocket(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeSocket != 0
}

// adminRoots is our trust bundle's X.509 authorities from the admin API.
func adminRoots(cmd *cobra.Command) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	err := withAdmin(cmd, func(c adminv1.AdminClient) error {
		resp, err := c.GetBundle(cmd.Context(), &adminv1.GetBundleRequest{})
		if err != nil {
			return err
		}
		for _, der := range resp.GetBundle().GetX509Authorities() {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("trust bundle: %w", err)
			}
			pool.AddCert(cert)
		}
		if len(resp.GetBundle().GetX509Authorities()) == 0 {
			return errors.New("trust bundle has no X.509 authority")
		}
		return nil
	})
	return pool, err
}

func loadBundle(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust bundle %s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("trust bundle %s: no PEM certificate", path)
	}
	return pool, nil
}

// verifyView is a verified log's report as -o json|yaml prints it. A log
// that fails verification prints nothing on stdout: the error says why.
type verifyView struct {
	OK              bool         `json:"ok"`
	Lines           int          `json:"lines"`
	Decisions       int          `json:"decisions"`
	FirstSeq        uint64       `json:"first_seq"`
	LastSeq         uint64       `json:"last_seq"`
	Rotations       int          `json:"rotations"`
	Signed          bool         `json:"signed"`
	CheckpointsFile string       `json:"checkpoints_file,omitempty"`
	Checkpoints     int          `json:"checkpoints"`
	Signers         []string     `json:"signers,omitempty"`
	CoveredSeq      uint64       `json:"covered_seq"`
	CoveredAt       *time.Time   `json:"covered_at,omitempty"`
	Uncovered       uint64       `json:"uncovered"`
	TornTailBytes   int          `json:"torn_tail_bytes"`
	Repairs         []repairView `json:"repairs,omitempty"`
}

type repairView struct {
	File   string `json:"file"`
	Seq    uint64 `json:"seq"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func newVerifyView(rep decisionlog.Report, checkpoints string) verifyView {
	v := verifyView{
		OK: true, Lines: rep.Lines, Decisions: rep.Decisions, FirstSeq: rep.FirstSeq, LastSeq: rep.LastSeq,
		Rotations: rep.Rotations, Signed: !rep.Unsigned, Checkpoints: rep.Checkpoints, Signers: rep.Signers,
		CoveredSeq: rep.Covered, Uncovered: rep.Uncovered, TornTailBytes: rep.TornTail,
	}
	if !rep.Unsigned {
		v.CheckpointsFile = checkpoints
		at := rep.CoveredAt.UTC()
		v.CoveredAt = &at
	}
	for _, r := range rep.Repairs {
		v.Repairs = append(v.Repairs, repairView{File: r.File, Seq: r.Seq, Bytes: r.Bytes, SHA256: r.SHA256})
	}
	return v
}

func writeVerifyReport(out io.Writer, rep decisionlog.Report, checkpoints string) {
	if rep.Lines == 0 {
		fmt.Fprintln(out, "ok: empty log")
	} else {
		fmt.Fprintf(out, "ok: %d decisions (seq %d-%d), chain intact\n", rep.Decisions, rep.FirstSeq, rep.LastSeq)
	}
	if rep.Unsigned {
		fmt.Fprintln(out, "UNSIGNED: no checkpoint was checked. This shows only that no line was edited on its own;")
		fmt.Fprintln(out, "  a cut end or start, a replaced log or a recomputed chain would not be noticed.")
	} else {
		fmt.Fprintf(out, "signed: %d checkpoint(s) in these files from %s by %s; latest covers seq %d (%s)\n",
			rep.Checkpoints, checkpoints, strings.Join(rep.Signers, ", "), rep.Covered, rep.CoveredAt.Format(time.RFC3339))
		if rep.Uncovered > 0 {
			fmt.Fprintf(out, "not yet covered: %d line(s) after the latest checkpoint; no signature protects them yet\n", rep.Uncovered)
		}
	}
	if rep.FirstSeq > 1 {
		fmt.Fprintf(out, "starts at seq %d: a rotation marker, earlier decisions are in older files\n", rep.FirstSeq)
	}
	for _, r := range rep.Repairs {
		fmt.Fprintf(out, "repaired: %s seq %d marks a torn line cut after a crash or failed write (%d bytes, sha256 %s)\n", r.File, r.Seq, r.Bytes, r.SHA256)
	}
	if rep.TornTail > 0 {
		fmt.Fprintf(out, "torn tail: the last %d bytes are a partial line (not yet repaired; sigil authz run cuts and marks it on start)\n", rep.TornTail)
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
