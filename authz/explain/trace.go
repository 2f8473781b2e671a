package explain

import (
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// query is what the tracer knows of one OPA query (a rule body, a
// negation, a comprehension).
type query struct {
	parent uint64
	// base is how many expressions held on the way to this query.
	base int
	// at is the index of the expression being evaluated.
	at   int
	rule *ast.Rule
	// evalEvent is the Eval event of the expression at at: its
	// bindings, which a Fail event may no longer carry.
	evalEvent topdown.Event
}

// tracer reads OPA's trace as it streams, keeping only what an
// explanation needs: bounded whatever the policy's size.
type tracer struct {
	events    int
	truncated bool
	queries   map[uint64]*query
	seen      map[string]bool
	matched   []Rule
	best      int
	closest   []Failure
	closeSeen map[string]bool
	lines     map[string][]string
}

var _ topdown.QueryTracer = (*tracer)(nil)

func newTracer(lines map[string][]string) *tracer {
	return &tracer{lines: lines, queries: map[uint64]*query{}, seen: map[string]bool{}, best: -1, closeSeen: map[string]bool{}}
}

func (t *tracer) Enabled() bool { return true }

func (t *tracer) Config() topdown.TraceConfig { return topdown.TraceConfig{PlugLocalVars: true} }

// maxQueries bounds the query table: past it the trace is truncated.
const maxQueries = 50_000

func (t *tracer) TraceEvent(e topdown.Event) {
	if t.truncated {
		return
	}
	t.events++
	if t.events > maxEvents || len(t.queries) > maxQueries {
		t.truncated = true
		return
	}
	switch e.Op {
	case topdown.EnterOp:
		q := t.queries[e.QueryID]
		if q == nil {
			q = &query{parent: e.ParentID}
			if p := t.queries[e.ParentID]; p != nil && e.ParentID != e.QueryID {
				q.base = p.base + p.at
			}
			t.queries[e.QueryID] = q
		}
		if r, ok := e.Node.(*ast.Rule); ok {
			q.rule = r
		}
	case topdown.EvalOp:
		if x, ok := e.Node.(*ast.Expr); ok {
			if q := t.queries[e.QueryID]; q != nil {
				q.at = x.Index
				q.evalEvent = e
			}
		}
	case topdown.ExitOp:
		if r, ok := e.Node.(*ast.Rule); ok {
			t.match(r)
		}
	case topdown.FailOp:
		if x, ok := e.Node.(*ast.Expr); ok {
			t.fail(e, x)
		}
	}
}

func (t *tracer) match(r *ast.Rule) {
	desc := ruleOf(r, t.lines)
	key := desc.File + ":" + desc.Name + ":" + strconv.Itoa(desc.Line)
	if t.seen[key] || len(t.matched) >= maxMatched {
		return
	}
	t.seen[key] = true
	t.matched = append(t.matched, desc)
}

func (t *tracer) fail(e topdown.Event, x *ast.Expr) {
	q := t.queries[e.QueryID]
	if q == nil {
		return
	}
	progress := q.base + x.Index
	if progress < t.best {
		return
	}
	f := Failure{Progress: progress}
	if x.Location != nil {
		f.Expr = firstLine(string(x.Location.Text))
		f.File, f.Line = x.Location.File, x.Location.Row
	} else {
		f.Expr = clip(x.String())
	}
	key := f.File + ":" + strconv.Itoa(f.Line) + ":" + f.Expr
	if progress > t.best {
		t.best, t.closest, t.closeSeen = progress, nil, map[string]bool{}
	}
	if t.closeSeen[key] || len(t.closest) >= maxClosest {
		return
	}
	t.closeSeen[key] = true
	// Walk up to the query, collecting the rules entered on the way.
	var chain []string
	for id, n := e.QueryID, 0; n < 64; n++ {
		cur := t.queries[id]
		if cur == nil {
			break
		}
		if cur.rule != nil {
			name := ruleOf(cur.rule, t.lines).Name
			if len(chain) == 0 || chain[len(chain)-1] != name {
				chain = append(chain, name)
			}
		}
		if cur.parent == id {
			break
		}
		id = cur.parent
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	if len(chain) > 0 {
		f.Rule = chain[len(chain)-1]
	}
	f.Chain = chain
	f.Bindings = bindings(e, x)
	if f.Bindings == nil && q.evalEvent.Node == ast.Node(x) {
		f.Bindings = bindings(q.evalEvent, x)
	}
	t.closest = append(t.closest, f)
}

// bindings are the values behind x when it failed: the named variables
// bound on x's line (e.g. the function argument edge) and, as operand 1,
// 2, ..., the compiler's temporaries inside x (e.g. the two sides of
// method in edge.methods).
func bindings(e topdown.Event, x *ast.Expr) map[string]string {
	if e.Locals == nil {
		return nil
	}
	const max = 8
	out := map[string]string{}
	if x.Location != nil {
		for v, md := range e.LocalMetadata {
			if len(out) >= max {
				break
			}
			name := string(md.Name)
			if md.Location == nil || md.Location.File != x.Location.File || md.Location.Row != x.Location.Row ||
				strings.HasPrefix(name, "__") || ast.Var(name).IsWildcard() {
				continue
			}
			if val := e.Locals.Get(v); val != nil {
				out[name] = clip(val.String())
			}
		}
	}
	n := 0
	ast.WalkVars(x, func(v ast.Var) bool {
		if len(out) >= max || v.IsWildcard() {
			return false
		}
		val := e.Locals.Get(v)
		if val == nil {
			return false
		}
		if md, ok := e.LocalMetadata[v]; ok && !strings.HasPrefix(string(md.Name), "__") {
			out[string(md.Name)] = clip(val.String())
			return false
		}
		if v.IsGenerated() {
			n++
			out["operand "+strconv.Itoa(n)] = clip(val.String())
		}
		return false
	})
	if len(out) == 0 {
		return nil
	}
	return out
}
