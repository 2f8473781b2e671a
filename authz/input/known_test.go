package input_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/sigilhq/sigil/authz/input"
)

// The messages converted without reflection must not have gained fields
// the direct conversion does not know (after a go-control-plane update).
func TestKnownMessagesHaveKnownFields(t *testing.T) {
	for name, want := range input.KnownFields {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := d.(protoreflect.MessageDescriptor).Fields().Len(); got != want {
			t.Errorf("%s has %d fields, the direct conversion in known.go knows %d: add the new ones there", name, got, want)
		}
	}
}

// Every field of the directly converted messages set, and the other
// oneof member: the direct conversion must equal the reflective walk.
func TestKnownMessagesMatchReflection(t *testing.T) {
	full := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Protocol: corev3.SocketAddress_UDP, Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"},
			ResolverName: "r", Ipv4Compat: true, NetworkNamespaceFilepath: "/var/run/netns/x",
		}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		}}}},
		Request: &authv3.AttributeContext_Request{
			Time: &timestamppb.Timestamp{Seconds: -5, Nanos: 7},
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "1", Method: "GET", Headers: map[string]string{"a": "b"},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "k", Value: "v", RawValue: []byte("rv")}}},
				Path:      "/p?q=1", Host: "h", Scheme: "https", Query: "q=1", Fragment: "f", Size: -1, Protocol: "HTTP/2",
				Body: "b", RawBody: []byte{0, 1, 2},
			},
		},
	}}
	empty := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Time: &timestamppb.Timestamp{}, Http: &authv3.AttributeContext_HttpRequest{},
	}, Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{}}}}}}
	// The rest of AttributeContext and Peer, the other Address members
	// (also set with a nil message), large and negative numbers, a
	// principal that is not a SPIFFE ID, uncommon method and protocol.
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": {Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(1.5)}}}}
	rest := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/p", Mode: 0o600}}},
			Service: "svc", Labels: map[string]string{"app": "x"}, Principal: "not a spiffe id", Certificate: "PEM",
		},
		Destination: &authv3.AttributeContext_Peer{
			Address:   &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{EndpointId: "e"}}},
			Principal: "spiffe://example.org/ns/a/sa/b",
		},
		Request: &authv3.AttributeContext_Request{
			Time: &timestamppb.Timestamp{Seconds: 1 << 40, Nanos: -999999999},
			Http: &authv3.AttributeContext_HttpRequest{Method: "PROPFIND", Scheme: "http", Protocol: "HTTP/3", Size: 1 << 62},
		},
		ContextExtensions:    map[string]string{"k": "v"},
		MetadataContext:      md,
		RouteMetadataContext: md,
		TlsSession:           &authv3.AttributeContext_TLSSession{Sni: "sni"},
	}}
	nilMembers := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_Pipe{}}},
		Request:     &authv3.AttributeContext_Request{},
	}}
	bigPort := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1<<32 - 1},
		}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{}}},
	}}
	for name, req := range map[string]*authv3.CheckRequest{
		"full": full, "empty": empty, "rest": rest, "nil members": nilMembers, "big port": bigPort,
		"no attributes": {}, "empty attributes": {Attributes: &authv3.AttributeContext{}},
	} {
		a, errA := input.NewBuilder(input.Options{}).Build(req)
		b, errB := input.NewReflectiveBuilder(input.Options{}).Build(req)
		if errA != nil || errB != nil || a.Compare(b) != 0 {
			t.Errorf("%s: direct %v (%v) != reflective %v (%v)", name, a, errA, b, errB)
		}
	}
}
