package input

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxFastQueryParams bounds the query parameters the fast path splits;
// more go through net/url (which has its own limit).
const maxFastQueryParams = 64

// queryParam is one query key and its values in order.
type queryParam struct {
	key  string
	vals []string
}

// splitPathAndQuery returns the path segments and query parameters
// opa-envoy-plugin derives from url.Parse(path) (parsed_path,
// parsed_query): the path split on "/" after its leading slashes, the
// query as ParseQuery reads it (order of keys is not kept; it does not
// matter in an object). Paths with nothing to unescape or reinterpret
// (no '%', '+', '#', ';', control bytes, no leading "//") are split
// directly, which is what url.Parse would return for them without its
// allocations; every other path goes through net/url. The fuzz target
// checks the two agree.
func splitPathAndQuery(path string) ([]string, []queryParam, error) {
	if !plainPath(path) {
		u, err := url.Parse(path)
		if err != nil {
			return nil, nil, err
		}
		q := u.Query()
		params := make([]queryParam, 0, len(q))
		for k, vs := range q {
			params = append(params, queryParam{key: k, vals: vs})
		}
		return splitPath(u.Path), params, nil
	}
	p, q, _ := strings.Cut(path, "?")
	return splitPath(p), splitQuery(q), nil
}

// plainPath reports whether url.Parse(path) would only cut path at the
// first '?' and ParseQuery only cut the query at '&' and '=': path is
// absolute but not "//authority", and has no byte that either unescapes,
// rejects or treats specially.
func plainPath(path string) bool {
	if len(path) == 0 || path[0] != '/' || strings.HasPrefix(path, "//") {
		return false
	}
	if strings.Count(path, "&") >= maxFastQueryParams {
		return false
	}
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c < 0x20 || c == 0x7f, c == '%', c == '+', c == '#', c == ';':
			return false
		}
	}
	return true
}

func splitPath(p string) []string {
	return strings.Split(strings.TrimLeft(p, "/"), "/")
}

// splitQuery is url.ParseQuery for a query plainPath accepted: pairs
// split at '&', empty pairs skipped, key and value split at the first
// '=', values of a repeated key kept in order.
func splitQuery(q string) []queryParam {
	var params []queryParam
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		found := false
		for i := range params {
			if params[i].key == k {
				params[i].vals = append(params[i].vals, v)
				found = true
				break
			}
		}
		if !found {
			params = append(params, queryParam{key: k, vals: []string{v}})
		}
	}
	return params
}

// parsePathAndQuery returns parsed_path and parsed_query as terms.
func parsePathAndQuery(path string) (*ast.Term, *ast.Term, error) {
	segs, params, err := splitPathAndQuery(path)
	if err != nil {
		return nil, nil, err
	}
	pts := make([]*ast.Term, len(segs))
	for i, s := range segs {
		pts[i] = ast.StringTerm(s)
	}
	kvs := make([][2]*ast.Term, len(params))
	for i, p := range params {
		vs := make([]*ast.Term, len(p.vals))
		for j, v := range p.vals {
			vs[j] = ast.StringTerm(v)
		}
		kvs[i] = [2]*ast.Term{ast.StringTerm(p.key), ast.ArrayTerm(vs...)}
	}
	return ast.ArrayTerm(pts...), ast.ObjectTerm(kvs...), nil
}

// lazyPathAndQuery returns parsed_path and parsed_query in the lazy
// form: native string slices (which ast.InterfaceToValue converts
// directly) in a native map, converted only if read.
func lazyPathAndQuery(path string) ([]string, map[string]any, error) {
	segs, params, err := splitPathAndQuery(path)
	if err != nil {
		return nil, nil, err
	}
	q := make(map[string]any, len(params))
	for _, p := range params {
		q[p.key] = p.vals
	}
	return segs, q, nil
}

// parsePathAndQuerySlow is the reference: net/url, as opa-envoy-plugin.
func parsePathAndQuerySlow(path string) (*ast.Term, *ast.Term, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, nil, err
	}
	parts := strings.Split(strings.TrimLeft(u.Path, "/"), "/")
	pts := make([]*ast.Term, len(parts))
	for i, p := range parts {
		pts[i] = ast.StringTerm(p)
	}
	return ast.ArrayTerm(pts...), valuesTerm(u.Query()), nil
}
