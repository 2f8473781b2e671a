package input

import (
	"encoding/base64"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The messages every CheckRequest carries, converted with their
// generated getters instead of protobuf reflection (which was half of
// Build). Each yields exactly what lazyMessage's reflective walk yields:
// proto JSON names, only populated fields (proto3: non-zero scalars,
// non-empty maps and bytes, set oneof members). knownFields (tested
// against the descriptors) makes a new field in go-control-plane fail
// the tests instead of going missing from the input.

// knownFields is how many fields each directly converted message has.
var knownFields = map[string]int{
	"envoy.service.auth.v3.AttributeContext.HttpRequest": 13,
	"envoy.config.core.v3.SocketAddress":                 7,
	"google.protobuf.Timestamp":                          2,
}

// lazyKnown converts m directly if it is one of the known messages.
func (b *Builder) lazyKnown(m any) (map[string]any, bool) {
	switch x := m.(type) {
	case *authv3.AttributeContext_HttpRequest:
		return b.lazyHTTP(x), true
	case *corev3.SocketAddress:
		return lazySocketAddress(x), true
	case *timestamppb.Timestamp:
		out := make(map[string]any, 2)
		if x.Seconds != 0 {
			out["seconds"] = ast.Number(strconv.FormatInt(x.Seconds, 10))
		}
		if x.Nanos != 0 {
			out["nanos"] = ast.Number(strconv.FormatInt(int64(x.Nanos), 10))
		}
		return out, true
	}
	return nil, false
}

func putString(out map[string]any, k, v string) {
	if v != "" {
		out[k] = ast.String(v)
	}
}

func (b *Builder) lazyHTTP(h *authv3.AttributeContext_HttpRequest) map[string]any {
	out := make(map[string]any, 8)
	putString(out, "id", h.GetId())
	putString(out, "method", h.GetMethod())
	if hs := h.GetHeaders(); len(hs) > 0 {
		out["headers"] = hs // converted by ast.InterfaceToValue without a round trip
	}
	if hm := h.GetHeaderMap(); hm != nil {
		out["headerMap"] = b.lazyMessage(hm.ProtoReflect())
	}
	putString(out, "path", h.GetPath())
	putString(out, "host", h.GetHost())
	putString(out, "scheme", h.GetScheme())
	putString(out, "query", h.GetQuery())
	putString(out, "fragment", h.GetFragment())
	if n := h.GetSize(); n != 0 {
		out["size"] = ast.Number(strconv.FormatInt(n, 10))
	}
	putString(out, "protocol", h.GetProtocol())
	putString(out, "body", h.GetBody())
	if raw := h.GetRawBody(); len(raw) > 0 {
		out["rawBody"] = ast.String(base64.StdEncoding.EncodeToString(raw))
	}
	return out
}

func lazySocketAddress(a *corev3.SocketAddress) map[string]any {
	out := make(map[string]any, 4)
	if p := a.GetProtocol(); p != 0 {
		out["protocol"] = ast.Number(strconv.FormatInt(int64(p), 10))
	}
	putString(out, "address", a.GetAddress())
	switch ps := a.GetPortSpecifier().(type) {
	case *corev3.SocketAddress_PortValue:
		out["portValue"] = ast.Number(strconv.FormatUint(uint64(ps.PortValue), 10))
	case *corev3.SocketAddress_NamedPort:
		out["namedPort"] = ast.String(ps.NamedPort)
	}
	putString(out, "resolverName", a.GetResolverName())
	if a.GetIpv4Compat() {
		out["ipv4Compat"] = ast.Boolean(true)
	}
	putString(out, "networkNamespaceFilepath", a.GetNetworkNamespaceFilepath())
	return out
}
