package input

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Options change how the input is built.
type Options struct {
	// SkipBody leaves parsed_body and truncated_body out, like
	// opa-envoy-plugin's skip-request-body-parse.
	SkipBody bool
}

// Error is returned when the request itself is malformed (bad path, body or
// content-length); opa-envoy-plugin answers those with HTTP 400.
type Error struct {
	Field string
	Err   error
}

func (e *Error) Error() string { return fmt.Sprintf("parse %s: %v", e.Field, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

var (
	keyVersion       = ast.StringTerm("version")
	keyParsedPath    = ast.StringTerm("parsed_path")
	keyParsedQuery   = ast.StringTerm("parsed_query")
	keyParsedBody    = ast.StringTerm("parsed_body")
	keyTruncatedBody = ast.StringTerm("truncated_body")
	keySourcePrinc   = ast.StringTerm("source_principal")
	keySigil         = ast.StringTerm("sigil")
	keySource        = ast.StringTerm("source")
	keyDestination   = ast.StringTerm("destination")
	keyID            = ast.StringTerm("id")
	keyTrustDomain   = ast.StringTerm("trust_domain")
	keyPath          = ast.StringTerm("path")
	keySegments      = ast.StringTerm("segments")
)

// versionValue is what opa-envoy-plugin puts in input.version for v3.
func versionValue() *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{ast.StringTerm("ext_authz"), ast.StringTerm("v3")},
		[2]*ast.Term{ast.StringTerm("encoding"), ast.StringTerm("protojson")},
	)
}

// commonHeaders are header names whose key terms a Builder shares.
func commonHeaders() []string {
	return []string{
		":authority", ":method", ":path", ":scheme", "accept", "accept-encoding", "authorization",
		"content-length", "content-type", "cookie", "te", "user-agent", "x-forwarded-for",
		"x-forwarded-proto", "x-request-id", "x-envoy-expected-rq-timeout-ms", "grpc-timeout",
	}
}

// Builder builds inputs. It shares the immutable terms every input has in
// common (field names, input.version, common header names), so it is safe
// for concurrent use and cheaper than Build per request.
type Builder struct {
	opts    Options
	fields  map[protoreflect.FieldDescriptor]*ast.Term
	headers map[string]*ast.Term
	version *ast.Term
	// ids caches, per principal seen (a mesh has few), its input.sigil
	// object (parsing and building them was a fifth of Build) and the
	// principal as a boxed ast.String (one allocation less per use).
	// Values are immutable *principalInfo. Cleared when it reaches
	// maxCachedIDs entries.
	ids    sync.Map
	idsLen atomic.Int64
	// peers caches destination peers (see destinationPeer).
	peers *boundedCache[peerKey, map[string]any]
	// sigils caches input.sigil per (source, destination) principal pair.
	sigils *boundedCache[[2]string, map[string]any]
	// common holds boxed ast.Strings for common methods, schemes and
	// protocols, so converting them allocates nothing.
	common map[string]any
	// reflectOnly builds the eager reference form (tests compare both).
	reflectOnly bool
}

// maxCachedIDs bounds Builder.ids.
const maxCachedIDs = 4096

// principalInfo is what a Builder caches per principal.
type principalInfo struct {
	str any       // ast.String(principal)
	id  ast.Value // idTerm(principal).Value; nil if not a SPIFFE ID
}

// principal returns the cached info for a non-empty principal.
func (b *Builder) principal(principal string) *principalInfo {
	if p, ok := b.ids.Load(principal); ok {
		return p.(*principalInfo)
	}
	p := &principalInfo{str: ast.String(principal)}
	if t := idTerm(principal); t != nil {
		p.id = t.Value
	}
	if b.idsLen.Add(1) > maxCachedIDs {
		b.ids.Clear()
		b.idsLen.Store(1)
	}
	b.ids.Store(principal, p)
	return p
}

// commonValues are the strings Builder.common boxes once.
func commonValues() []string {
	return []string{
		"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
		"http", "https", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3",
	}
}

// str is ast.String(s) as an any, without allocating for common values.
func (b *Builder) str(s string) any {
	if v, ok := b.common[s]; ok {
		return v
	}
	return ast.String(s)
}

// NewBuilder prepares a Builder for CheckRequests.
func NewBuilder(opts Options) *Builder {
	b := &Builder{
		opts:    opts,
		fields:  map[protoreflect.FieldDescriptor]*ast.Term{},
		headers: map[string]*ast.Term{},
		version: versionValue(),
		common:  map[string]any{},
		peers:   newBoundedCache[peerKey, map[string]any](maxCachedPeers),
		sigils:  newBoundedCache[[2]string, map[string]any](maxCachedIDs),
	}
	for _, v := range commonValues() {
		b.common[v] = ast.String(v)
	}
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			b.fields[fd] = ast.StringTerm(fd.JSONName())
			if fd.IsMap() {
				fd = fd.MapValue()
			}
			if m := fd.Message(); m != nil {
				walk(m)
			}
		}
	}
	walk((&authv3.CheckRequest{}).ProtoReflect().Descriptor())
	for _, h := range commonHeaders() {
		b.headers[h] = ast.StringTerm(h)
	}
	return b
}

// Build returns the OPA input for req; see Builder.Build. Servers should
// keep one Builder instead.
func Build(req *authv3.CheckRequest, opts Options) (ast.Value, error) {
	return NewBuilder(opts).Build(req)
}

// Build returns the OPA input for req without any JSON round trip, as
// opa-envoy-plugin v1.10 would see it: field names are the proto JSON
// names, unset fields are absent, integers and enums are numbers, bytes
// are base64 strings, well-known types other than Struct are objects of
// their fields. The request part is an ast.LazyObject over maps whose
// leaves are already ast values: a policy pays only for the fields it
// reads. Forced, it equals the eager reflective form (see the tests).
func (b *Builder) Build(req *authv3.CheckRequest) (ast.Value, error) {
	if b.reflectOnly {
		return b.buildEager(req)
	}
	top, ok := b.lazyMessage(req.ProtoReflect()).(map[string]any)
	if !ok {
		return nil, &Error{Field: "request", Err: errNotMessage}
	}
	insert := func(k *ast.Term, v any) {
		if t, ok := v.(*ast.Term); ok {
			v = t.Value
		}
		top[string(k.Value.(ast.String))] = v
	}
	if err := b.addParsed(req, true, insert); err != nil {
		return nil, err
	}
	return ast.LazyObject(top), nil
}

var errNotMessage = errors.New("not a message")

// buildEager converts the whole request up front by reflection; it is the
// reference the lazy form is checked against.
func (b *Builder) buildEager(req *authv3.CheckRequest) (ast.Value, error) {
	obj := b.messageObject(req.ProtoReflect(), 8)
	if err := b.addParsed(req, false, func(k *ast.Term, v any) { obj.Insert(k, v.(*ast.Term)) }); err != nil {
		return nil, err
	}
	return obj, nil
}

// addParsed adds what opa-envoy-plugin derives from the request (version,
// parsed_path, parsed_query, parsed_body, truncated_body,
// source_principal) and input.sigil. insert takes a *ast.Term, or in the
// lazy form also a native value LazyObject converts when read.
func (b *Builder) addParsed(req *authv3.CheckRequest, lazy bool, insert func(k *ast.Term, v any)) error {
	http := req.GetAttributes().GetRequest().GetHttp()
	insert(keyVersion, b.version)

	if lazy {
		path, query, err := lazyPathAndQuery(http.GetPath())
		if err != nil {
			return &Error{Field: "path", Err: err}
		}
		insert(keyParsedPath, path)
		insert(keyParsedQuery, query)
	} else {
		path, query, err := parsePathAndQuery(http.GetPath())
		if err != nil {
			return &Error{Field: "path", Err: err}
		}
		insert(keyParsedPath, path)
		insert(keyParsedQuery, query)
	}

	if !b.opts.SkipBody {
		body, truncated, err := parseBody(http.GetHeaders(), http.GetBody(), http.GetRawBody())
		if err != nil {
			return &Error{Field: "body", Err: err}
		}
		insert(keyParsedBody, body)
		insert(keyTruncatedBody, ast.InternedTerm(truncated))
	}

	src := req.GetAttributes().GetSource().GetPrincipal()
	dst := req.GetAttributes().GetDestination().GetPrincipal()
	if lazy {
		if src != "" {
			insert(keySourcePrinc, b.principal(src).str)
		}
		// A native map: LazyObject makes it an object only if read.
		insert(keySigil, b.sigilMap(src, dst))
	} else {
		if src != "" {
			insert(keySourcePrinc, ast.StringTerm(src))
		}
		insert(keySigil, sigilTerm(src, dst))
	}
	return nil
}

// sigilMap is input.sigil in lazy form, shared between the requests with
// the same principals (bounded, immutable once stored); the per-principal
// objects are shared, immutable and eager.
func (b *Builder) sigilMap(src, dst string) map[string]any {
	k := [2]string{src, dst}
	if m, ok := b.sigils.get(k); ok {
		return m
	}
	m := b.newSigilMap(src, dst)
	b.sigils.put(k, m)
	return m
}

func (b *Builder) newSigilMap(src, dst string) map[string]any {
	m := make(map[string]any, 2)
	if src != "" {
		if id := b.principal(src).id; id != nil {
			m["source"] = id
		}
	}
	if dst != "" {
		if id := b.principal(dst).id; id != nil {
			m["destination"] = id
		}
	}
	return m
}

// sigilTerm is input.sigil: {"source": ID, "destination": ID} where each ID
// is present only if the principal is a valid SPIFFE ID.
func sigilTerm(src, dst string) *ast.Term {
	kvs := make([][2]*ast.Term, 0, 2)
	if t := idTerm(src); t != nil {
		kvs = append(kvs, [2]*ast.Term{keySource, t})
	}
	if t := idTerm(dst); t != nil {
		kvs = append(kvs, [2]*ast.Term{keyDestination, t})
	}
	return ast.ObjectTerm(kvs...)
}

func idTerm(principal string) *ast.Term {
	if principal == "" {
		return nil
	}
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return nil
	}
	p := id.Path()
	var segs []*ast.Term
	if p != "" {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		segs = make([]*ast.Term, len(parts))
		for i, s := range parts {
			segs[i] = ast.StringTerm(s)
		}
	}
	return ast.ObjectTerm(
		[2]*ast.Term{keyID, ast.StringTerm(id.String())},
		[2]*ast.Term{keyTrustDomain, ast.StringTerm(id.TrustDomain().Name())},
		[2]*ast.Term{keyPath, ast.StringTerm(p)},
		[2]*ast.Term{keySegments, ast.ArrayTerm(segs...)},
	)
}

// SPIFFEID parses a principal into a SPIFFE ID string, or "" if it is not one.
func SPIFFEID(principal string) string {
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return ""
	}
	return id.String()
}

func (b *Builder) messageObject(m protoreflect.Message, extra int) ast.Object {
	kvs := make([][2]*ast.Term, 0, 4+extra)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		kvs = append(kvs, [2]*ast.Term{b.fieldKey(fd), b.fieldTerm(fd, v)})
		return true
	})
	return ast.NewObject(kvs...)
}

func (b *Builder) fieldKey(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := b.fields[fd]; ok {
		return t
	}
	return ast.StringTerm(fd.JSONName())
}

func (b *Builder) mapKey(k string) *ast.Term {
	if t, ok := b.headers[k]; ok {
		return t
	}
	return ast.StringTerm(k)
}

func (b *Builder) fieldTerm(fd protoreflect.FieldDescriptor, v protoreflect.Value) *ast.Term {
	switch {
	case fd.IsMap():
		mv := v.Map()
		kvs := make([][2]*ast.Term, 0, mv.Len())
		vd := fd.MapValue()
		mv.Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
			kvs = append(kvs, [2]*ast.Term{b.mapKey(k.String()), b.scalarOrMessage(vd, val)})
			return true
		})
		return ast.ObjectTerm(kvs...)
	case fd.IsList():
		l := v.List()
		ts := make([]*ast.Term, l.Len())
		for i := range ts {
			ts[i] = b.scalarOrMessage(fd, l.Get(i))
		}
		return ast.ArrayTerm(ts...)
	default:
		return b.scalarOrMessage(fd, v)
	}
}

func (b *Builder) scalarOrMessage(fd protoreflect.FieldDescriptor, v protoreflect.Value) *ast.Term {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return b.messageTerm(v.Message())
	case protoreflect.BoolKind:
		return ast.InternedTerm(v.Bool())
	case protoreflect.StringKind:
		return ast.StringTerm(v.String())
	case protoreflect.BytesKind:
		return ast.StringTerm(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		return intTerm(int64(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return intTerm(v.Int())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.NewTerm(ast.Number(strconv.FormatUint(v.Uint(), 10)))
	case protoreflect.FloatKind:
		return floatTerm(v.Float(), 32)
	case protoreflect.DoubleKind:
		return floatTerm(v.Float(), 64)
	}
	return ast.NullTerm()
}

// floatTerm formats a proto float the way OPA's RoundTrip does. NaN and
// infinities have no JSON form; they become null.
func floatTerm(f float64, bits int) *ast.Term {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return ast.NullTerm()
	}
	return ast.NewTerm(ast.Number(strconv.FormatFloat(f, 'f', -1, bits)))
}

func (b *Builder) messageTerm(m protoreflect.Message) *ast.Term {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return structTerm(s)
	}
	return ast.NewTerm(b.messageObject(m, 0))
}

// structTerm converts a google.protobuf.Struct like Struct.AsMap followed
// by ast.InterfaceToValue: numbers are float64 printed with 'g'.
func structTerm(s *structpb.Struct) *ast.Term {
	kvs := make([][2]*ast.Term, 0, len(s.GetFields()))
	for k, v := range s.GetFields() {
		kvs = append(kvs, [2]*ast.Term{ast.StringTerm(k), structValueTerm(v)})
	}
	return ast.ObjectTerm(kvs...)
}

func structValueTerm(v *structpb.Value) *ast.Term {
	switch k := v.GetKind().(type) {
	case *structpb.Value_BoolValue:
		return ast.InternedTerm(k.BoolValue)
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return ast.NullTerm()
		}
		return ast.NewTerm(ast.Number(strconv.FormatFloat(k.NumberValue, 'g', -1, 64)))
	case *structpb.Value_StringValue:
		return ast.StringTerm(k.StringValue)
	case *structpb.Value_StructValue:
		return structTerm(k.StructValue)
	case *structpb.Value_ListValue:
		ts := make([]*ast.Term, len(k.ListValue.GetValues()))
		for i, e := range k.ListValue.GetValues() {
			ts[i] = structValueTerm(e)
		}
		return ast.ArrayTerm(ts...)
	}
	return ast.NullTerm()
}

func valuesTerm(q url.Values) *ast.Term {
	kvs := make([][2]*ast.Term, 0, len(q))
	for k, vs := range q {
		ts := make([]*ast.Term, len(vs))
		for i, v := range vs {
			ts[i] = ast.StringTerm(v)
		}
		kvs = append(kvs, [2]*ast.Term{ast.StringTerm(k), ast.ArrayTerm(ts...)})
	}
	return ast.ObjectTerm(kvs...)
}

// parseBody mirrors opa-envoy-plugin: JSON, url-encoded forms and multipart
// forms are parsed; gRPC bodies need descriptors Sigil does not load, so
// they stay null like the plugin without a proto descriptor set.
func parseBody(headers map[string]string, body string, raw []byte) (*ast.Term, bool, error) {
	ct, ok := headers["content-type"]
	if !ok {
		return ast.InternedNullTerm, false, nil
	}
	payload := body
	if payload == "" {
		payload = string(raw)
	}
	switch {
	case strings.Contains(ct, "application/json"):
		if payload == "" {
			return ast.InternedNullTerm, false, nil
		}
		if truncated, err := isTruncated(headers, len(payload)); err != nil || truncated {
			return ast.InternedNullTerm, truncated, err
		}
		var x any
		if err := util.UnmarshalJSON([]byte(payload), &x); err != nil {
			return nil, false, err
		}
		v, err := ast.InterfaceToValue(x)
		if err != nil {
			return nil, false, err
		}
		return ast.NewTerm(v), false, nil
	case strings.Contains(ct, "application/grpc"):
		return ast.InternedNullTerm, false, nil
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		if payload == "" {
			return ast.InternedNullTerm, false, nil
		}
		if truncated, err := isTruncated(headers, len(payload)); err != nil || truncated {
			return ast.InternedNullTerm, truncated, err
		}
		q, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, err
		}
		return valuesTerm(q), false, nil
	case strings.Contains(ct, "multipart/form-data"):
		if payload == "" {
			return ast.InternedNullTerm, false, nil
		}
		if truncated, err := isTruncated(headers, len(payload)); err != nil || truncated {
			return ast.InternedNullTerm, truncated, err
		}
		return multipartTerm(ct, payload)
	}
	return ast.InternedNullTerm, false, nil
}

func multipartTerm(ct, payload string) (*ast.Term, bool, error) {
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, false, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.InternedNullTerm, false, nil
	}
	values := map[string][]*ast.Term{}
	var order []string
	mr := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, false, err
		}
		var t *ast.Term
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			var x any
			if err := util.UnmarshalJSON(b, &x); err != nil {
				return nil, false, err
			}
			v, err := ast.InterfaceToValue(x)
			if err != nil {
				return nil, false, err
			}
			t = ast.NewTerm(v)
		} else {
			t = ast.StringTerm(string(b))
		}
		if _, seen := values[name]; !seen {
			order = append(order, name)
		}
		values[name] = append(values[name], t)
	}
	kvs := make([][2]*ast.Term, 0, len(order))
	for _, name := range order {
		kvs = append(kvs, [2]*ast.Term{ast.StringTerm(name), ast.ArrayTerm(values[name]...)})
	}
	return ast.ObjectTerm(kvs...), false, nil
}

func isTruncated(headers map[string]string, n int) (bool, error) {
	cl, ok := headers["content-length"]
	if !ok {
		return false, nil
	}
	v, err := strconv.ParseInt(cl, 10, 64)
	if err != nil {
		return false, fmt.Errorf("content-length: %w", err)
	}
	return v != -1 && v > int64(n), nil
}

func intTerm(i int64) *ast.Term {
	if i >= 0 && i <= 512 {
		return ast.InternedTerm(int(i))
	}
	return ast.NewTerm(ast.Number(strconv.FormatInt(i, 10)))
}
