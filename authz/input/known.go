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
// non-empty maps and bytes, set oneof members). map<string, string>
// fields are handed over as the Go map, integers as Go integers, both
// converted by ast.InterfaceToValue only when read. knownFields (tested
// against the descriptors) makes a new field in go-control-plane fail
// the tests instead of going missing from the input.

// knownFields is how many fields each directly converted message has.
var knownFields = map[string]int{
	"envoy.service.auth.v3.CheckRequest":                 1,
	"envoy.service.auth.v3.AttributeContext":             7,
	"envoy.service.auth.v3.AttributeContext.Peer":        5,
	"envoy.service.auth.v3.AttributeContext.Request":     2,
	"envoy.service.auth.v3.AttributeContext.HttpRequest": 13,
	"envoy.config.core.v3.Address":                       3,
	"envoy.config.core.v3.SocketAddress":                 7,
	"google.protobuf.Timestamp":                          2,
}

// lazyKnown converts m directly if it is one of the known messages.
// Numbers are stored as Go integers: ast.InterfaceToValue formats them
// as lazyLeafOrMessage would, and only when read.
func (b *Builder) lazyKnown(m any) (map[string]any, bool) {
	switch x := m.(type) {
	case *authv3.CheckRequest:
		out := make(map[string]any, 8) // Build adds 7 keys
		if a := x.GetAttributes(); a != nil {
			out["attributes"] = b.lazyAttributes(a)
		}
		return out, true
	case *authv3.AttributeContext:
		return b.lazyAttributes(x), true
	case *authv3.AttributeContext_Peer:
		return b.lazyPeer(x), true
	case *authv3.AttributeContext_Request:
		out := make(map[string]any, 2)
		if t := x.GetTime(); t != nil {
			out["time"] = lazyTimestamp(t)
		}
		if h := x.GetHttp(); h != nil {
			out["http"] = b.lazyHTTP(h)
		}
		return out, true
	case *authv3.AttributeContext_HttpRequest:
		return b.lazyHTTP(x), true
	case *corev3.Address:
		return b.lazyAddress(x), true
	case *corev3.SocketAddress:
		return lazySocketAddress(x), true
	case *timestamppb.Timestamp:
		return lazyTimestamp(x), true
	}
	return nil, false
}

func (b *Builder) lazyAttributes(a *authv3.AttributeContext) map[string]any {
	out := make(map[string]any, 4)
	if p := a.GetSource(); p != nil {
		out["source"] = b.lazyPeer(p)
	}
	if p := a.GetDestination(); p != nil {
		out["destination"] = b.destinationPeer(p)
	}
	if r := a.GetRequest(); r != nil {
		out["request"] = b.lazyMessage(r.ProtoReflect())
	}
	if ce := a.GetContextExtensions(); len(ce) > 0 {
		out["contextExtensions"] = ce // converted by ast.InterfaceToValue without a round trip
	}
	if md := a.GetMetadataContext(); md != nil {
		out["metadataContext"] = b.lazyMessage(md.ProtoReflect())
	}
	if md := a.GetRouteMetadataContext(); md != nil {
		out["routeMetadataContext"] = b.lazyMessage(md.ProtoReflect())
	}
	if tls := a.GetTlsSession(); tls != nil {
		out["tlsSession"] = b.lazyMessage(tls.ProtoReflect())
	}
	return out
}

func (b *Builder) lazyPeer(p *authv3.AttributeContext_Peer) map[string]any {
	out := make(map[string]any, 4)
	if a := p.GetAddress(); a != nil {
		out["address"] = b.lazyAddress(a)
	}
	putString(out, "service", p.GetService())
	if l := p.GetLabels(); len(l) > 0 {
		out["labels"] = l // converted by ast.InterfaceToValue without a round trip
	}
	if pr := p.GetPrincipal(); pr != "" {
		out["principal"] = b.principal(pr).str
	}
	putString(out, "certificate", p.GetCertificate())
	return out
}

// peerKey identifies a Peer that has only a principal and a socket
// address with an address and a port value: what Envoy sends for the
// destination of every request to the same listener.
type peerKey struct {
	principal, address string
	port               uint32
}

// maxCachedPeers bounds Builder.peers.
const maxCachedPeers = 1024

// destinationPeer is lazyPeer(p), shared between the requests to the same
// destination (a sidecar has few) when p is such a plain Peer. Source
// peers are not cached: their ports are ephemeral.
func (b *Builder) destinationPeer(p *authv3.AttributeContext_Peer) map[string]any {
	k, ok := plainPeer(p)
	if !ok {
		return b.lazyPeer(p)
	}
	if m, ok := b.peers.get(k); ok {
		return m
	}
	m := b.lazyPeer(p)
	b.peers.put(k, m)
	return m
}

func plainPeer(p *authv3.AttributeContext_Peer) (peerKey, bool) {
	if p.GetService() != "" || len(p.GetLabels()) > 0 || p.GetCertificate() != "" {
		return peerKey{}, false
	}
	sa := p.GetAddress().GetSocketAddress()
	port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	if !ok || sa.GetProtocol() != 0 || sa.GetResolverName() != "" || sa.GetIpv4Compat() || sa.GetNetworkNamespaceFilepath() != "" {
		return peerKey{}, false
	}
	return peerKey{principal: p.GetPrincipal(), address: sa.GetAddress(), port: port.PortValue}, true
}

// lazyAddress converts an Address; a set oneof member is present even
// when its message is nil, as in the reflective walk.
func (b *Builder) lazyAddress(a *corev3.Address) map[string]any {
	out := make(map[string]any, 1)
	switch x := a.GetAddress().(type) {
	case *corev3.Address_SocketAddress:
		out["socketAddress"] = lazySocketAddress(x.SocketAddress)
	case *corev3.Address_Pipe:
		out["pipe"] = b.lazyMessage(x.Pipe.ProtoReflect())
	case *corev3.Address_EnvoyInternalAddress:
		out["envoyInternalAddress"] = b.lazyMessage(x.EnvoyInternalAddress.ProtoReflect())
	}
	return out
}

func lazyTimestamp(t *timestamppb.Timestamp) map[string]any {
	out := make(map[string]any, 2)
	if s := t.GetSeconds(); s != 0 {
		out["seconds"] = intValue(s)
	}
	if n := t.GetNanos(); n != 0 {
		out["nanos"] = intValue(int64(n))
	}
	return out
}

// intValue is i for ast.InterfaceToValue, which formats integers that
// fit an int the way lazyLeafOrMessage does; the others (on 32-bit
// platforms) are formatted here.
func intValue(i int64) any {
	if i != int64(int(i)) {
		return ast.Number(strconv.FormatInt(i, 10))
	}
	return i
}

func putString(out map[string]any, k, v string) {
	if v != "" {
		out[k] = ast.String(v)
	}
}

func (b *Builder) putCommon(out map[string]any, k, v string) {
	if v != "" {
		out[k] = b.str(v)
	}
}

func (b *Builder) lazyHTTP(h *authv3.AttributeContext_HttpRequest) map[string]any {
	out := make(map[string]any, 8)
	putString(out, "id", h.GetId())
	b.putCommon(out, "method", h.GetMethod())
	if hs := h.GetHeaders(); len(hs) > 0 {
		out["headers"] = hs // converted by ast.InterfaceToValue without a round trip
	}
	if hm := h.GetHeaderMap(); hm != nil {
		out["headerMap"] = b.lazyMessage(hm.ProtoReflect())
	}
	putString(out, "path", h.GetPath())
	putString(out, "host", h.GetHost())
	b.putCommon(out, "scheme", h.GetScheme())
	putString(out, "query", h.GetQuery())
	putString(out, "fragment", h.GetFragment())
	if n := h.GetSize(); n != 0 {
		out["size"] = intValue(n)
	}
	b.putCommon(out, "protocol", h.GetProtocol())
	putString(out, "body", h.GetBody())
	if raw := h.GetRawBody(); len(raw) > 0 {
		out["rawBody"] = ast.String(base64.StdEncoding.EncodeToString(raw))
	}
	return out
}

func lazySocketAddress(a *corev3.SocketAddress) map[string]any {
	out := make(map[string]any, 4)
	if p := a.GetProtocol(); p != 0 {
		out["protocol"] = intValue(int64(p))
	}
	putString(out, "address", a.GetAddress())
	switch ps := a.GetPortSpecifier().(type) {
	case *corev3.SocketAddress_PortValue:
		out["portValue"] = intValue(int64(ps.PortValue))
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
