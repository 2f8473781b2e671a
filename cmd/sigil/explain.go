package main

import (
	"errors"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/authz/authzconfig"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread"
	"github.com/sigilhq/sigil/authz/explain"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/authz/policytool"
	"github.com/sigilhq/sigil/console"
)

// policyFlags say where the serving policy and decision log are: an authz
// config, or the directory and file themselves.
type policyFlags struct {
	authzConfig, policyDir, bundle, decisionLog, decisionPath string
	// input is how the authz service builds inputs (from --authz-config).
	input input.Options
}

func (f *policyFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.authzConfig, "authz-config", "", "authz.yaml: take the policy, decision path and decision log from it")
	cmd.Flags().StringVar(&f.policyDir, "policy", "", "policy directory (as `sigil authz` serves it)")
	cmd.Flags().StringVar(&f.bundle, "bundle", "", "OPA bundle file instead of --policy")
	cmd.Flags().StringVar(&f.decisionLog, "decision-log", "", "decision log file (the authz host's)")
	cmd.Flags().StringVar(&f.decisionPath, "decision-path", "", "decision path (default data.envoy.authz.allow)")
}

// resolve fills unset flags from --authz-config.
func (f *policyFlags) resolve() error {
	if f.authzConfig == "" {
		return nil
	}
	cfg, err := authzconfig.Load(f.authzConfig)
	if err != nil {
		return err
	}
	if f.policyDir == "" && f.bundle == "" {
		switch {
		case cfg.Policy.Dir != "":
			f.policyDir = cfg.Policy.Dir
		case cfg.Policy.BundleFile != "":
			f.bundle = cfg.Policy.BundleFile
		default:
			return errors.New("the authz config serves its policy from a URL: pass the same policy with --policy DIR or --bundle FILE")
		}
	}
	if f.decisionLog == "" {
		f.decisionLog = cfg.DecisionLog.File
	}
	if f.decisionPath == "" {
		f.decisionPath = cfg.DecisionPath
	}
	f.input.SkipBody = cfg.SkipBody
	return nil
}

// policy returns the policy loader the flags name, or nil for none.
func (f *policyFlags) policy() console.PolicyLoader {
	switch {
	case f.policyDir != "":
		return policysrc.Dir{Path: f.policyDir}.Load
	case f.bundle != "":
		return policysrc.BundleFile{Path: f.bundle}.Load
	}
	return nil
}

func newExplainCmd() *cobra.Command {
	var (
		pf                                    policyFlags
		source, destination, method, path, in string
		headers                               []string
		seq                                   uint64
		id, output                            string
	)
	cmd := &cobra.Command{
		Use:   "explain",
		Short: "Say which policy rules allowed or denied a request or a logged decision, and why",
		Long: `Explain decides a request with the serving policy, exactly as authz would,
and prints the rules that decided it; for a denial, the false expression that
came closest to an allow and the rules that led to it.

The request is given by --source/--destination/--method/--path/--header,
by --input (a CheckRequest in protojson, as for policy eval), or is taken
from the decision log by --seq or --id.`,
		Example: `  sigil explain --policy ./policies --source spiffe://example.org/ns/shop/sa/frontend \
      --destination spiffe://example.org/ns/shop/sa/cart --method DELETE --path /items/7
  sigil explain --authz-config authz.yaml --seq 42 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "text" { // the name before -o was shared
				output = outTable
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := pf.resolve(); err != nil {
				return err
			}
			load := pf.policy()
			if load == nil {
				return usageErrorf("explain: say where the policy is: --policy DIR, --bundle FILE or --authz-config authz.yaml")
			}
			req, note, err := explainRequest(pf, seq, id, in, source, destination, method, path, headers)
			if err != nil {
				return err
			}
			p, err := load(cmd.Context())
			if err != nil {
				return err
			}
			x, err := explain.New(cmd.Context(), p, pf.decisionPath, pf.input)
			if err != nil {
				return err
			}
			ex := x.Explain(cmd.Context(), req)
			out := cmd.OutOrStdout()
			if output != outTable {
				return printData(out, output, struct {
					explain.Explanation
					Note string `json:"note,omitempty"`
				}{ex, note})
			}
			if note != "" {
				cmd.PrintErrln("note: " + note)
			}
			return ex.Write(out)
		},
	}
	pf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&source, "source", "", "caller's SPIFFE ID")
	f.StringVar(&destination, "destination", "", "callee's SPIFFE ID")
	f.StringVar(&method, "method", "GET", "HTTP method")
	f.StringVar(&path, "path", "/", "HTTP path (with query)")
	f.StringArrayVar(&headers, "header", nil, "request header NAME=VALUE (repeatable)")
	f.StringVar(&in, "input", "", "CheckRequest in protojson instead of the flags above")
	f.Uint64Var(&seq, "seq", 0, "explain the decision with this seq in --decision-log")
	f.StringVar(&id, "id", "", "explain the decision with this decision id in --decision-log (searches the newest 100000 lines)")
	addOutputFlag(cmd, &output)
	return cmd
}

// explainRequest builds the request to explain from the flags.
func explainRequest(pf policyFlags, seq uint64, id, in, source, destination, method, path string, headers []string) (*authv3.CheckRequest, string, error) {
	switch {
	case seq != 0 || id != "":
		if pf.decisionLog == "" {
			return nil, "", usageErrorf("explain: --seq and --id need --decision-log (or --authz-config with a decision log file)")
		}
		var e decisionlog.Entry
		var err error
		if seq != 0 {
			e, err = decisionread.BySeq(pf.decisionLog, seq)
		} else {
			e, err = decisionread.ByID(pf.decisionLog, id, 0)
		}
		if err != nil {
			return nil, "", err
		}
		req, note, err := explain.RequestOf(e)
		if err != nil {
			return nil, "", err
		}
		logged := "logged decision " + strconv.FormatUint(e.Seq, 10) + " was " + e.Result + " (" + e.Reason + ") by policy revision " + e.Revision
		if note != "" {
			logged += "; " + note
		}
		return req, logged, nil
	case in != "":
		req, err := policytool.ReadCheckRequest(in)
		return req, "", err
	case source == "" && destination == "":
		return nil, "", usageErrorf("explain: give --source and --destination, --input FILE, or --seq/--id with --decision-log")
	}
	h := make(map[string]string, len(headers))
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, "", usageErrorf("--header %q: want NAME=VALUE", kv)
		}
		h[strings.ToLower(k)] = v
	}
	return explain.Request(source, destination, method, path, h), "", nil
}
