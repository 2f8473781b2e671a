package input

import (
	"slices"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// httpRequestFields are the fields of AttributeContext.HttpRequest that
// httpRequestObject handles without reflection. If the proto gains a
// field, NewBuilder sees the mismatch and keeps the reflective walk.
func httpRequestFields() []string {
	return []string{"body", "fragment", "headerMap", "headers", "host", "id", "method", "path", "protocol", "query", "rawBody", "scheme", "size"}
}

// fastHTTPRequest reports whether the compiled-in HttpRequest has exactly
// the fields httpRequestObject knows.
func fastHTTPRequest() bool {
	md := (&authv3.AttributeContext_HttpRequest{}).ProtoReflect().Descriptor()
	var names []string
	for i := range md.Fields().Len() {
		names = append(names, md.Fields().Get(i).JSONName())
	}
	slices.Sort(names)
	return slices.Equal(names, httpRequestFields())
}

// httpRequestObject converts the HttpRequest, the largest and most common
// part of a CheckRequest, straight from its Go fields; it yields what the
// reflective walk yields (proto3: zero scalars and empty maps are absent).
func (b *Builder) httpRequestObject(h *authv3.AttributeContext_HttpRequest) *ast.Term {
	kvs := make([][2]*ast.Term, 0, 8)
	str := func(key *ast.Term, v string) {
		if v != "" {
			kvs = append(kvs, [2]*ast.Term{key, ast.StringTerm(v)})
		}
	}
	k := b.http
	str(k.id, h.GetId())
	str(k.method, h.GetMethod())
	if hs := h.GetHeaders(); len(hs) > 0 {
		hkv := make([][2]*ast.Term, 0, len(hs))
		for name, v := range hs {
			hkv = append(hkv, [2]*ast.Term{b.mapKey(name), ast.StringTerm(v)})
		}
		kvs = append(kvs, [2]*ast.Term{k.headers, ast.ObjectTerm(hkv...)})
	}
	if hm := h.GetHeaderMap(); hm != nil {
		kvs = append(kvs, [2]*ast.Term{k.headerMap, b.messageTerm(hm.ProtoReflect())})
	}
	str(k.path, h.GetPath())
	str(k.host, h.GetHost())
	str(k.scheme, h.GetScheme())
	str(k.query, h.GetQuery())
	str(k.fragment, h.GetFragment())
	if s := h.GetSize(); s != 0 {
		kvs = append(kvs, [2]*ast.Term{k.size, intTerm(s)})
	}
	str(k.protocol, h.GetProtocol())
	str(k.body, h.GetBody())
	if rb := h.GetRawBody(); len(rb) > 0 {
		kvs = append(kvs, [2]*ast.Term{k.rawBody, b.scalarOrMessage(b.rawBodyField, protoreflect.ValueOfBytes(rb))})
	}
	return ast.ObjectTerm(kvs...)
}

// httpKeys are the shared key terms of HttpRequest.
type httpKeys struct {
	id, method, headers, headerMap, path, host, scheme, query, fragment, size, protocol, body, rawBody *ast.Term
}

func newHTTPKeys() *httpKeys {
	return &httpKeys{
		id: ast.StringTerm("id"), method: ast.StringTerm("method"), headers: ast.StringTerm("headers"),
		headerMap: ast.StringTerm("headerMap"), path: ast.StringTerm("path"), host: ast.StringTerm("host"),
		scheme: ast.StringTerm("scheme"), query: ast.StringTerm("query"), fragment: ast.StringTerm("fragment"),
		size: ast.StringTerm("size"), protocol: ast.StringTerm("protocol"), body: ast.StringTerm("body"),
		rawBody: ast.StringTerm("rawBody"),
	}
}
