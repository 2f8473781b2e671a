//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// caller makes one kind of call; each worker has its own.
type caller interface {
	call(ctx context.Context) error
	// check validates the last answer (outside the timed part).
	check() error
	close() error
}

type target interface {
	caller(worker int) (caller, error)
	close() error
}

func newTarget(ctx context.Context, o options) (target, error) {
	req, err := checkRequest(o)
	if err != nil {
		return nil, err
	}
	switch o.call {
	case "check":
		if req == nil {
			return nil, errors.New("-call check needs -request")
		}
		want := int32(o.wantCode)
		return newGRPCTarget(ctx, o, "/envoy.service.auth.v3.Authorization/Check", req, func(b []byte) error {
			var r authv3.CheckResponse
			if err := proto.Unmarshal(b, &r); err != nil {
				return err
			}
			if c := r.GetStatus().GetCode(); c != want {
				return fmt.Errorf("decision code %d", c)
			}
			return nil
		})
	case "health":
		req := healthRequest()
		return newGRPCTarget(ctx, o, "/grpc.health.v1.Health/Check", req, func(b []byte) error {
			var r healthpb.HealthCheckResponse
			if err := proto.Unmarshal(b, &r); err != nil {
				return err
			}
			if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("health %v", r.GetStatus())
			}
			return nil
		})
	case "echo":
		if req == nil {
			req = make([]byte, 512)
		}
		return &echoTarget{addr: o.addr, frame: binary.BigEndian.AppendUint32(nil, uint32(len(req))), payload: req}, nil
	default:
		return nil, fmt.Errorf("-call %q: want check, health or echo", o.call)
	}
}

// checkRequest is -request marshalled; nil without -request.
func checkRequest(o options) ([]byte, error) {
	if o.request == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(o.request)
	if err != nil {
		return nil, err
	}
	var cr authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &cr); err != nil {
		return nil, fmt.Errorf("%s: %w", o.request, err)
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(&cr)
}

func healthRequest() []byte {
	b, _ := proto.Marshal(&healthpb.HealthCheckRequest{})
	return b
}

// rawCodec sends pre-marshalled bytes and keeps the answer's bytes, so a
// call costs no marshalling; answers are decoded after timing.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type grpcTarget struct {
	conns  []*grpc.ClientConn
	method string
	req    []byte
	verify func([]byte) error
}

func newGRPCTarget(ctx context.Context, o options, method string, req []byte, verify func([]byte) error) (*grpcTarget, error) {
	t := &grpcTarget{method: method, req: req, verify: verify}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for range o.conns {
		// Distinct authorities per connection would not matter here; a
		// separate ClientConn is a separate HTTP/2 connection.
		cc, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.close()
			return nil, err
		}
		t.conns = append(t.conns, cc)
		cc.Connect()
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				t.close()
				return nil, fmt.Errorf("connect %s: %v (last state %v)", o.addr, ctx.Err(), s)
			}
		}
	}
	return t, nil
}

func (t *grpcTarget) caller(w int) (caller, error) {
	return &grpcCaller{conn: t.conns[w%len(t.conns)], method: t.method, req: t.req, verify: t.verify,
		opts: []grpc.CallOption{grpc.ForceCodec(rawCodec{})}}, nil
}

func (t *grpcTarget) close() error {
	var errs []error
	for _, c := range t.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

type grpcCaller struct {
	conn      *grpc.ClientConn
	method    string
	req, resp []byte
	verify    func([]byte) error
	opts      []grpc.CallOption
}

func (c *grpcCaller) call(ctx context.Context) error {
	return c.conn.Invoke(ctx, c.method, &c.req, &c.resp, c.opts...)
}
func (c *grpcCaller) check() error { return c.verify(c.resp) }
func (c *grpcCaller) close() error { return nil }

// errKind names an error for counting: its gRPC code, or "other".
func errKind(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "deadline"
	}
	return "other: " + err.Error()
}

// The echo protocol: a request is a 4-byte big-endian length and that many
// bytes; the answer is echoReply bytes (about a CheckResponse's size).
const (
	echoReply    = 64
	echoMaxFrame = 1 << 20
)

type echoTarget struct {
	addr           string
	frame, payload []byte
}

func (t *echoTarget) caller(int) (caller, error) {
	c, err := net.Dial("tcp", t.addr)
	if err != nil {
		return nil, err
	}
	return &echoCaller{conn: c, req: append(append([]byte(nil), t.frame...), t.payload...)}, nil
}

func (t *echoTarget) close() error { return nil }

type echoCaller struct {
	conn net.Conn
	req  []byte
	resp [echoReply]byte
}

func (c *echoCaller) call(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		if err := c.conn.SetDeadline(d); err != nil {
			return err
		}
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	_, err := io.ReadFull(c.conn, c.resp[:])
	return err
}
func (c *echoCaller) check() error { return nil }
func (c *echoCaller) close() error { return c.conn.Close() }

// serveEcho answers the echo protocol on addr until ctx ends.
func serveEcho(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); lis.Close() }()
	for {
		c, err := lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			var hdr [4]byte
			buf := make([]byte, 0, 4096)
			reply := make([]byte, echoReply)
			for {
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				size := binary.BigEndian.Uint32(hdr[:])
				if size > echoMaxFrame {
					return
				}
				if cap(buf) < int(size) {
					buf = make([]byte, size)
				}
				buf = buf[:size]
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(reply); err != nil {
					return
				}
			}
		}()
	}
}
