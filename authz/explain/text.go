package explain

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Write prints ex for a person: the decision, the rules that made it,
// and for a denial the steps that came closest to an allow.
func (ex Explanation) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s -> %s: %s (%s)", orDash(ex.Source), orDash(ex.Method), orDash(ex.Path), orDash(ex.Destination), strings.ToUpper(ex.Result), ex.Reason)
	if ex.Detail != "" {
		fmt.Fprintf(&b, ": %s", ex.Detail)
	}
	fmt.Fprintf(&b, "\npolicy revision %s, decision %s\n", ex.Revision, ex.Query)
	if len(ex.DecidedBy) == 0 {
		b.WriteString("\nno rule at the decision path held (the decision is undefined)\n")
	} else {
		b.WriteString("\ndecided by:\n")
		for _, r := range ex.DecidedBy {
			fmt.Fprintf(&b, "  %s:%d  %s\n", r.File, r.Line, r.Text)
		}
	}
	if ex.Result != "allow" && len(ex.Closest) > 0 {
		b.WriteString("\nno allow: the closest miss (the first false expression on the longest path)\n")
		for _, f := range ex.Closest {
			fmt.Fprintf(&b, "  %s:%d  %s  is false\n", f.File, f.Line, f.Expr)
			if len(f.Chain) > 0 {
				fmt.Fprintf(&b, "    via %s\n", strings.Join(f.Chain, " > "))
			}
			keys := make([]string, 0, len(f.Bindings))
			for k := range f.Bindings {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(&b, "    %s = %s\n", k, f.Bindings[k])
			}
		}
	}
	if len(ex.Matched) > 0 {
		b.WriteString("\nrules that held:\n")
		for _, r := range ex.Matched {
			fmt.Fprintf(&b, "  %s:%d  %s\n", r.File, r.Line, r.Text)
		}
	}
	if ex.Truncated {
		b.WriteString("\n(the evaluation trace was too long; only its start was read)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
