package nodeapi

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
)

// encodedMsg is a message marshalled once to go out on many streams
// (a new bundle to every agent): codec sends its bytes as they are. The
// bytes are never changed once made.
type encodedMsg struct{ b []byte }

func encodeResponse(resp *nodev1.SyncResponse) (*encodedMsg, error) {
	b, err := proto.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("encode sync response: %w", err)
	}
	return &encodedMsg{b: b}, nil
}

// codec is gRPC's proto codec, except that an *encodedMsg goes out as the
// bytes it holds. It is the codec of every service on the server the node
// API is registered with (grpc.ForceServerCodecV2); they see no
// difference.
type codec struct{ encoding.CodecV2 }

func newCodec() (codec, error) {
	c := encoding.GetCodecV2(protocodec.Name)
	if c == nil {
		return codec{}, fmt.Errorf("no gRPC codec %q registered", protocodec.Name)
	}
	return codec{c}, nil
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encodedMsg); ok {
		// A SliceBuffer is not pooled: gRPC's Free after the write leaves
		// the shared bytes alone.
		return mem.BufferSlice{mem.SliceBuffer(e.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}
