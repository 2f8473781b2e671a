package envoytest

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Validate runs the protoc-gen-validate rules of m (ValidateAll) and of
// every message packed in an Any anywhere inside it, recursively. The
// generated ValidateAll does not descend into Any, and Envoy does, so a
// config that passes only the built-in check may still be refused by Envoy.
// An Any whose type is not linked into the binary is an error: blank-import
// the extension's package.
func Validate(m proto.Message) error {
	var errs []error
	validate(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().FullName()), &errs)
	return errors.Join(errs...)
}

type validator interface{ ValidateAll() error }

func validate(m protoreflect.Message, path string, errs *[]error) {
	if v, ok := m.Interface().(validator); ok {
		if err := v.ValidateAll(); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	walk(m, path, errs)
}

// walk finds the Anys below m and validates what they hold.
func walk(m protoreflect.Message, path string, errs *[]error) {
	if m.Descriptor().FullName() == "google.protobuf.Any" {
		a := &anypb.Any{
			TypeUrl: m.Get(m.Descriptor().Fields().ByName("type_url")).String(),
			Value:   m.Get(m.Descriptor().Fields().ByName("value")).Bytes(),
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: unpack %s: %w", path, a.TypeUrl, err))
			return
		}
		validate(inner.ProtoReflect(), path+"("+string(inner.ProtoReflect().Descriptor().FullName())+")", errs)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), errs)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walk(mv.Message(), fmt.Sprintf("%s[%v]", name, k.Interface()), errs)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walk(v.Message(), name, errs)
		}
		return true
	})
}
