package input

import (
	"encoding/base64"
	"math"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The lazy form of the CheckRequest part of the input: every message is a
// map[string]any that ast.LazyObject converts only when a policy reads it,
// and every leaf is already an ast.Value, so conversion never reaches
// OPA's JSON round trip. Forcing the whole object (json.marshal(input),
// comparison, iteration) yields exactly what the eager walk yields; the
// tests and the fuzz target check that.

func (b *Builder) lazyMessage(m protoreflect.Message) any {
	x := m.Interface()
	if s, ok := x.(*structpb.Struct); ok {
		return structTerm(s).Value
	}
	if out, ok := b.lazyKnown(x); ok {
		return out
	}
	out := make(map[string]any, 8)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		out[fd.JSONName()] = b.lazyField(fd, v)
		return true
	})
	return out
}

func (b *Builder) lazyField(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch {
	case fd.IsMap():
		mv := v.Map()
		out := make(map[string]any, mv.Len())
		vd := fd.MapValue()
		mv.Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
			out[k.String()] = b.lazyLeafOrMessage(vd, val)
			return true
		})
		return out
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range out {
			out[i] = b.lazyLeafOrMessage(fd, l.Get(i))
		}
		return out
	}
	return b.lazyLeafOrMessage(fd, v)
}

func (b *Builder) lazyLeafOrMessage(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return b.lazyMessage(v.Message())
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool())
	case protoreflect.StringKind:
		return ast.String(v.String())
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return ast.Null{}
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return ast.Number(strconv.FormatFloat(f, 'f', -1, bits))
	}
	return ast.Null{}
}
