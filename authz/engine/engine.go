package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultPath is where decisions are read unless configured otherwise.
const DefaultPath = "data.envoy.authz.allow"

// Policy is one revision of policy: Rego modules and base documents.
type Policy struct {
	// Revision names this revision in logs and metrics (a content hash or a
	// bundle manifest revision).
	Revision string
	// Modules maps a file name to its Rego source.
	Modules map[string]string
	// Data is the base document tree (data.*), or nil.
	Data map[string]any
}

// Reason says why a decision came out the way it did. The set is small and
// fixed so it can label metrics.
type Reason string

const (
	ReasonAllowed    Reason = "allowed"
	ReasonDenied     Reason = "denied"
	ReasonUndefined  Reason = "undefined"
	ReasonMultiple   Reason = "multiple_results"
	ReasonIllTyped   Reason = "ill_typed"
	ReasonEvalError  Reason = "eval_error"
	ReasonBadRequest Reason = "bad_request"
	ReasonNoPolicy   Reason = "no_policy"
	// ReasonTimeout: the evaluation was cancelled at its deadline.
	ReasonTimeout Reason = "eval_timeout"
)

// Header is one header (or query parameter) to add.
type Header struct{ Key, Value string }

// Decision is the outcome of one evaluation. Anything other than a clean
// allow has Allowed false.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Detail explains Reason in words (for logs, never for the client).
	Detail string
	// Object is true when the policy returned an object rather than a bool.
	Object                  bool
	Headers                 []Header
	ResponseHeadersToAdd    []Header
	RequestHeadersToRemove  []string
	QueryParametersToRemove []string
	QueryParametersToSet    []Header
	Body                    string
	// HTTPStatus is the denied response's status; 0 when none applies.
	HTTPStatus      int
	DynamicMetadata *structpb.Struct
	Revision        string
}

// Deny returns a fail-closed decision.
func Deny(reason Reason, detail, revision string) Decision {
	return Decision{Reason: reason, Detail: detail, Revision: revision}
}

// Prepared is a compiled policy revision ready to evaluate. It is immutable.
type Prepared struct {
	revision string
	query    string
	pq       rego.PreparedEvalQuery
}

// Revision is the policy revision this query was prepared from.
func (p *Prepared) Revision() string { return p.revision }

// NormalizePath accepts "data.envoy.authz.allow" or "envoy/authz/allow" and
// returns the data reference as a query string.
func NormalizePath(path string) (string, error) {
	if path == "" {
		return DefaultPath, nil
	}
	q := path
	if !strings.HasPrefix(q, "data.") && q != "data" {
		q = "data." + strings.ReplaceAll(strings.Trim(q, "/"), "/", ".")
	}
	ref, err := ast.ParseRef(q)
	if err != nil {
		return "", fmt.Errorf("decision path %q: %w", path, err)
	}
	if !ref.IsGround() || !ref.HasPrefix(ast.DefaultRootRef) {
		return "", fmt.Errorf("decision path %q: must be a ground reference under data", path)
	}
	return ref.String(), nil
}

// Prepare compiles p and prepares the query at path. It fails on any
// parse, compile or type error so a broken policy never serves.
func Prepare(ctx context.Context, p Policy, path string) (*Prepared, error) {
	q, err := NormalizePath(path)
	if err != nil {
		return nil, err
	}
	pq, err := rego.New(RegoOptions(p, q)...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare policy revision %s: %w", p.Revision, err)
	}
	return &Prepared{revision: p.Revision, query: q, pq: pq}, nil
}

// RegoOptions are the options that load p (modules in name order, data
// in an in-memory store) for the normalized query q; a caller that needs
// another evaluation of the same policy (explain's tracing) adds to them.
func RegoOptions(p Policy, q string) []func(*rego.Rego) {
	names := make([]string, 0, len(p.Modules))
	for name := range p.Modules {
		names = append(names, name)
	}
	sort.Strings(names)
	opts := []func(*rego.Rego){rego.Query(q)}
	for _, name := range names {
		opts = append(opts, rego.Module(name, p.Modules[name]))
	}
	data := p.Data
	if data == nil {
		data = map[string]any{}
	}
	return append(opts, rego.Store(inmem.NewFromObject(data)))
}

// Decide evaluates input and interprets the result, failing closed.
//
// Per evaluation it skips what rego would otherwise set up and nobody
// reads: a goroutine waiting on ctx to cancel the evaluation (cancelled
// here by context.AfterFunc, which starts one only when ctx ends) and a
// fresh metrics set with its timers.
func (p *Prepared) Decide(ctx context.Context, input ast.Value) Decision {
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancel.Cancel)
	rs, err := p.pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalExternalCancel(cancel), rego.EvalMetrics(metrics.NoOp()))
	stop()
	switch {
	case err != nil && (topdown.IsCancel(err) || ctx.Err() != nil):
		// OPA cancels the evaluation when ctx ends.
		return Deny(ReasonTimeout, "evaluation timed out: "+err.Error(), p.revision)
	case err != nil:
		return Deny(ReasonEvalError, err.Error(), p.revision)
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return Deny(ReasonUndefined, "decision "+p.query+" is undefined", p.revision)
	case len(rs) > 1 || len(rs[0].Expressions) > 1:
		return Deny(ReasonMultiple, fmt.Sprintf("decision %s has %d results", p.query, len(rs)), p.revision)
	}
	d := Interpret(rs[0].Expressions[0].Value)
	d.Revision = p.revision
	return d
}

// Interpret turns a policy result (as returned by rego: bool, map[string]any
// with json.Number numbers, ...) into a decision, following
// opa-envoy-plugin's rules for object results. Any ill-typed part denies.
func Interpret(v any) Decision {
	switch v := v.(type) {
	case bool:
		if v {
			return Decision{Allowed: true, Reason: ReasonAllowed}
		}
		return Decision{Reason: ReasonDenied, Detail: "policy returned false"}
	case map[string]any:
		d, err := interpretObject(v)
		if err != nil {
			return Deny(ReasonIllTyped, err.Error(), "")
		}
		return d
	}
	return Deny(ReasonIllTyped, fmt.Sprintf("decision has type %s, want boolean or object", typeName(v)), "")
}

func interpretObject(o map[string]any) (Decision, error) {
	d := Decision{Object: true}
	raw, ok := o["allowed"]
	if !ok {
		return d, errors.New("decision object has no \"allowed\" key")
	}
	allowed, ok := raw.(bool)
	if !ok {
		return d, fmt.Errorf("decision \"allowed\" has type %s, want boolean", typeName(raw))
	}
	var err error
	if d.Headers, err = headersField(o, "headers"); err != nil {
		return d, err
	}
	if md, ok := o["dynamic_metadata"]; ok {
		m, ok := md.(map[string]any)
		if !ok {
			return d, fmt.Errorf("decision \"dynamic_metadata\" has type %s, want object", typeName(md))
		}
		if d.DynamicMetadata, err = structpb.NewStruct(jsonNumbersToFloat(m).(map[string]any)); err != nil {
			return d, fmt.Errorf("decision \"dynamic_metadata\": %w", err)
		}
	}
	if allowed {
		if d.RequestHeadersToRemove, err = stringsField(o, "request_headers_to_remove"); err != nil {
			return d, err
		}
		if d.ResponseHeadersToAdd, err = headersField(o, "response_headers_to_add"); err != nil {
			return d, err
		}
		if d.QueryParametersToRemove, err = stringsField(o, "query_parameters_to_remove"); err != nil {
			return d, err
		}
		if d.QueryParametersToSet, err = queryToSet(o); err != nil {
			return d, err
		}
		d.Allowed, d.Reason = true, ReasonAllowed
		return d, nil
	}
	if b, ok := o["body"]; ok {
		if d.Body, ok = b.(string); !ok {
			return d, fmt.Errorf("decision \"body\" has type %s, want string", typeName(b))
		}
	}
	d.HTTPStatus = http.StatusForbidden
	if s, ok := o["http_status"]; ok {
		n, ok := s.(json.Number)
		if !ok {
			return d, fmt.Errorf("decision \"http_status\" has type %s, want number", typeName(s))
		}
		code, err := n.Int64()
		if err != nil || http.StatusText(int(code)) == "" || !envoyStatus(int(code)) {
			return d, fmt.Errorf("decision \"http_status\" %s is not an HTTP status Envoy knows", n)
		}
		d.HTTPStatus = int(code)
	}
	d.Reason, d.Detail = ReasonDenied, "policy returned allowed=false"
	return d, nil
}

func stringsField(o map[string]any, name string) ([]string, error) {
	raw, ok := o[name]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("decision %q has type %s, want array of strings", name, typeName(raw))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("decision %q[%d] has type %s, want string", name, i, typeName(e))
		}
		out[i] = s
	}
	return out, nil
}

// headersField accepts an object or an array of objects whose values are
// strings or arrays of strings.
func headersField(o map[string]any, name string) ([]Header, error) {
	raw, ok := o[name]
	if !ok {
		return nil, nil
	}
	var objs []map[string]any
	switch v := raw.(type) {
	case map[string]any:
		objs = []map[string]any{v}
	case []any:
		for i, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("decision %q[%d] has type %s, want object", name, i, typeName(e))
			}
			objs = append(objs, m)
		}
	default:
		return nil, fmt.Errorf("decision %q has type %s, want object", name, typeName(raw))
	}
	var out []Header
	for _, m := range objs {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch v := m[k].(type) {
			case string:
				out = append(out, Header{k, v})
			case []any:
				for _, e := range v {
					s, ok := e.(string)
					if !ok {
						return nil, fmt.Errorf("decision %q header %q has a %s value, want string", name, k, typeName(e))
					}
					out = append(out, Header{k, s})
				}
			default:
				return nil, fmt.Errorf("decision %q header %q has type %s, want string", name, k, typeName(v))
			}
		}
	}
	return out, nil
}

func queryToSet(o map[string]any) ([]Header, error) {
	const name = "query_parameters_to_set"
	raw, ok := o[name]
	if !ok {
		return nil, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decision %q has type %s, want object", name, typeName(raw))
	}
	wrapped := map[string]any{name: []any{m}}
	return headersField(wrapped, name)
}

// envoyStatus reports whether Envoy's HttpStatus enum has code.
func envoyStatus(code int) bool {
	_, ok := typev3.StatusCode_name[int32(code)]
	return ok
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number, float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func jsonNumbersToFloat(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonNumbersToFloat(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = jsonNumbersToFloat(e)
		}
		return out
	}
	return v
}

// Engine holds the prepared query for the current policy revision. Readers
// never wait: a new revision is prepared aside and swapped in atomically.
type Engine struct {
	path string
	cur  atomic.Pointer[Prepared]
}

// New returns an engine with no policy; it denies everything until Load
// succeeds.
func New(path string) (*Engine, error) {
	q, err := NormalizePath(path)
	if err != nil {
		return nil, err
	}
	return &Engine{path: q}, nil
}

// Path is the decision path queried.
func (e *Engine) Path() string { return e.path }

// Load prepares p and makes it current. On error the previous revision
// keeps serving.
func (e *Engine) Load(ctx context.Context, p Policy) error {
	prep, err := Prepare(ctx, p, e.path)
	if err != nil {
		return err
	}
	e.cur.Store(prep)
	return nil
}

// Current returns the serving revision or nil.
func (e *Engine) Current() *Prepared { return e.cur.Load() }

// Revision is the serving revision or "".
func (e *Engine) Revision() string {
	if p := e.cur.Load(); p != nil {
		return p.revision
	}
	return ""
}

// Decide evaluates input against the current revision.
func (e *Engine) Decide(ctx context.Context, input ast.Value) Decision {
	p := e.cur.Load()
	if p == nil {
		return Deny(ReasonNoPolicy, "no policy loaded", "")
	}
	return p.Decide(ctx, input)
}
