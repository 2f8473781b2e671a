//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// For an outside HTTP/2 load generator (h2load) that sends a fixed body
// and cannot read gRPC trailers: -grpc-body writes the request as one
// gRPC length-prefixed message, and -probe makes one verified call and
// prints the size of the answer's DATA payload, so the caller can check
// that the generator's answers were all that size (a refusal or error
// answers with another size or none).

// writeGRPCBody writes the request of o.call as a gRPC message: a zero
// compression flag, the length (4 bytes, big endian) and the bytes.
func writeGRPCBody(o options, path string) error {
	var req []byte
	switch o.call {
	case "check":
		b, err := checkRequest(o)
		if err != nil {
			return err
		}
		if b == nil {
			return errors.New("-call check needs -request")
		}
		req = b
	case "health":
		req = healthRequest()
	default:
		return fmt.Errorf("-grpc-body: -call %q: want check or health", o.call)
	}
	msg := make([]byte, 5, 5+len(req))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(req)))
	return os.WriteFile(path, append(msg, req...), 0o644)
}

// probe makes one call, verifies the answer as a run would, and prints
// "answer_bytes N": the gRPC message (5-byte prefix and the answer).
func probe(ctx context.Context, o options, out io.Writer) error {
	o.conns, o.workers = 1, 1
	callers, closeAll, err := openCallers(ctx, o)
	if err != nil {
		return err
	}
	defer closeAll()
	c, ok := callers[0].(*grpcCaller)
	if !ok {
		return fmt.Errorf("-probe: -call %q: want check or health", o.call)
	}
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := c.call(cctx); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "answer_bytes %d\n", 5+len(c.resp))
	return err
}
