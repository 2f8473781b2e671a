package input

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxFastQueryParams bounds the query parameters the fast path splits;
// more go through net/url (which has its own limit).
const maxFastQueryParams = 64

// parsePathAndQuery returns parsed_path and parsed_query as
// opa-envoy-plugin builds them from url.Parse(path): the path split on
// "/" after its leading slashes, and the query as a map of value lists.
// Paths with nothing to unescape or reinterpret (no '%', '+', '#', ';',
// control bytes, no leading "//") are split directly; that is what
// url.Parse would return for them, without its allocations. Every other
// path goes through net/url. The fuzz target checks the two agree.
func parsePathAndQuery(path string) (*ast.Term, *ast.Term, error) {
	if !plainPath(path) {
		return parsePathAndQuerySlow(path)
	}
	p, q, _ := strings.Cut(path, "?")
	return pathTerm(p), fastQueryTerm(q), nil
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

func pathTerm(p string) *ast.Term {
	p = strings.TrimLeft(p, "/")
	n := strings.Count(p, "/") + 1
	pts := make([]*ast.Term, 0, n)
	for {
		seg, rest, more := strings.Cut(p, "/")
		pts = append(pts, ast.StringTerm(seg))
		if !more {
			break
		}
		p = rest
	}
	return ast.ArrayTerm(pts...)
}

// fastQueryTerm is valuesTerm(url.ParseQuery(q)) for a query plainPath
// accepted: pairs split at '&', empty pairs skipped, key and value split
// at the first '=', values of a repeated key kept in order.
func fastQueryTerm(q string) *ast.Term {
	if q == "" {
		return ast.ObjectTerm()
	}
	type kv struct {
		key  string
		vals []*ast.Term
	}
	var pairs []kv
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		found := false
		for i := range pairs {
			if pairs[i].key == k {
				pairs[i].vals = append(pairs[i].vals, ast.StringTerm(v))
				found = true
				break
			}
		}
		if !found {
			pairs = append(pairs, kv{key: k, vals: []*ast.Term{ast.StringTerm(v)}})
		}
	}
	kvs := make([][2]*ast.Term, len(pairs))
	for i, p := range pairs {
		kvs[i] = [2]*ast.Term{ast.StringTerm(p.key), ast.ArrayTerm(p.vals...)}
	}
	return ast.ObjectTerm(kvs...)
}

// parsePathAndQuerySlow is the reference: net/url, as opa-envoy-plugin.
func parsePathAndQuerySlow(path string) (*ast.Term, *ast.Term, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, nil, err
	}
	return pathTerm(u.Path), valuesTerm(u.Query()), nil
}
