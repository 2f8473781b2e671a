package explain

import (
	"context"
	"fmt"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
)

// Limits keep one explanation bounded whatever the policy does.
const (
	// maxEvents is how many trace events are looked at; past it the
	// explanation says it is truncated.
	maxEvents = 200_000
	// maxMatched and maxClosest bound the lists in an Explanation.
	maxMatched = 64
	maxClosest = 6
	// maxText bounds every piece of policy source or value quoted.
	maxText = 240
)

// Rule is one rule of the policy.
type Rule struct {
	// Name is the rule's full path, e.g. data.envoy.authz.allow.
	Name    string `json:"name"`
	Default bool   `json:"default,omitempty"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	// Text is the rule's first source line.
	Text string `json:"text"`
}

// Failure is an expression that was false, with the rules that led to it.
type Failure struct {
	Expr string `json:"expr"`
	File string `json:"file"`
	Line int    `json:"line"`
	// Rule is the rule whose body held Expr ("" for the query itself).
	Rule string `json:"rule,omitempty"`
	// Chain lists the rules entered from the decision down to Rule.
	Chain []string `json:"chain,omitempty"`
	// Bindings are the values of Expr's variables when it failed.
	Bindings map[string]string `json:"bindings,omitempty"`
	// Progress counts the expressions that held before this one on the
	// way from the query; the closest failures have the most.
	Progress int `json:"progress"`
}

// Explanation is why one request got its decision.
type Explanation struct {
	Query       string `json:"query"`
	Revision    string `json:"revision"`
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Method      string `json:"method,omitempty"`
	Path        string `json:"path,omitempty"`
	Result      string `json:"result"` // allow | deny
	Reason      string `json:"reason"`
	Detail      string `json:"detail,omitempty"`
	// DecidedBy are the rules at the decision path whose bodies held:
	// they produced the decision's value (a default rule when no other did).
	DecidedBy []Rule `json:"decided_by"`
	// Matched are all rules whose bodies held, in evaluation order.
	Matched []Rule `json:"matched"`
	// Closest are, for a denied request, the false expressions that came
	// furthest on the way to an allow: the missing step.
	Closest []Failure `json:"closest,omitempty"`
	// Truncated says the trace was longer than the explainer reads.
	Truncated bool `json:"truncated,omitempty"`
}

// Explainer explains decisions of one policy revision. It is safe for
// concurrent use.
type Explainer struct {
	query    string
	prepared *engine.Prepared
	traced   rego.PreparedEvalQuery
	opts     input.Options
	// lines holds each module's source lines, to quote rules.
	lines map[string][]string
}

// New prepares p for explanations of the decision at path (as authz takes
// it: data.envoy.authz.allow or envoy/authz/allow), building inputs with
// opts as the authz service does.
func New(ctx context.Context, p engine.Policy, path string, opts input.Options) (*Explainer, error) {
	q, err := engine.NormalizePath(path)
	if err != nil {
		return nil, err
	}
	prepared, err := engine.Prepare(ctx, p, q)
	if err != nil {
		return nil, err
	}
	traced, err := rego.New(engine.RegoOptions(p, q)...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare policy revision %s for tracing: %w", p.Revision, err)
	}
	lines := make(map[string][]string, len(p.Modules))
	for name, src := range p.Modules {
		lines[name] = strings.Split(src, "\n")
	}
	return &Explainer{query: q, prepared: prepared, traced: traced, lines: lines, opts: opts}, nil
}

// Revision is the policy revision this explainer was prepared from.
func (x *Explainer) Revision() string { return x.prepared.Revision() }

// Explain decides req exactly as authz would and says why.
func (x *Explainer) Explain(ctx context.Context, req *authv3.CheckRequest) Explanation {
	ex := Explanation{Query: x.query, Revision: x.prepared.Revision()}
	if http := req.GetAttributes().GetRequest().GetHttp(); http != nil {
		ex.Method, ex.Path = http.GetMethod(), http.GetPath()
	}
	ex.Source = input.SPIFFEID(req.GetAttributes().GetSource().GetPrincipal())
	ex.Destination = input.SPIFFEID(req.GetAttributes().GetDestination().GetPrincipal())
	in, err := input.Build(req, x.opts)
	if err != nil {
		d := engine.Deny(engine.ReasonBadRequest, err.Error(), x.prepared.Revision())
		ex.Result, ex.Reason, ex.Detail = "deny", string(d.Reason), d.Detail
		return ex
	}
	d := x.prepared.Decide(ctx, in)
	ex.Result, ex.Reason, ex.Detail = "deny", string(d.Reason), d.Detail
	if d.Allowed {
		ex.Result = "allow"
	}
	t := newTracer(x.lines)
	// Indexing would skip rules whose heads cannot match, and early exit
	// would stop at the first success: both hide the rules an operator
	// wants to see.
	_, _ = x.traced.Eval(ctx, rego.EvalParsedInput(in), rego.EvalQueryTracer(t),
		rego.EvalRuleIndexing(false), rego.EvalEarlyExit(false))
	ex.Truncated = t.truncated
	ex.Matched = t.matched
	for _, r := range t.matched {
		if r.Name == x.query {
			ex.DecidedBy = append(ex.DecidedBy, r)
		}
	}
	// A default rule decides only when no other rule at the path held.
	if len(ex.DecidedBy) > 1 {
		var nonDefault []Rule
		for _, r := range ex.DecidedBy {
			if !r.Default {
				nonDefault = append(nonDefault, r)
			}
		}
		if len(nonDefault) > 0 {
			ex.DecidedBy = nonDefault
		}
	}
	if !d.Allowed {
		ex.Closest = t.closest
	}
	if ex.DecidedBy == nil {
		ex.DecidedBy = []Rule{}
	}
	if ex.Matched == nil {
		ex.Matched = []Rule{}
	}
	return ex
}

// ruleOf describes r, quoting its first line from lines.
func ruleOf(r *ast.Rule, lines map[string][]string) Rule {
	out := Rule{Default: r.Default}
	if r.Module != nil {
		out.Name = r.Path().String()
	} else {
		out.Name = r.Head.Ref().String()
	}
	if r.Location != nil {
		out.File, out.Line = r.Location.File, r.Location.Row
		if src := lines[r.Location.File]; r.Location.Row >= 1 && r.Location.Row <= len(src) {
			out.Text = clip(strings.TrimSpace(src[r.Location.Row-1]))
		} else {
			out.Text = firstLine(string(r.Location.Text))
		}
	}
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return clip(strings.TrimSpace(s))
}

func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	cut := maxText
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
