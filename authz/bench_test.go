package authz_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/internal/benchcpu"
)

func benchSetup(b *testing.B) (*engine.Engine, map[string]*authv3.CheckRequest) {
	b.Helper()
	p, err := policysrc.Dir{Path: filepath.Join("testdata", "bench", "policy")}.Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New("")
	if err != nil {
		b.Fatal(err)
	}
	if err := eng.Load(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	reqs := map[string]*authv3.CheckRequest{}
	for _, name := range []string{"allow", "deny"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "bench", name+".json"))
		if err != nil {
			b.Fatal(err)
		}
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(raw, &req); err != nil {
			b.Fatal(err)
		}
		reqs[name] = &req
	}
	return eng, reqs
}

// BenchmarkDecide is input build + evaluation on the 50-rule policy.
func BenchmarkDecide(b *testing.B) {
	eng, reqs := benchSetup(b)
	for _, name := range []string{"allow", "deny"} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			req := reqs[name]
			builder := input.NewBuilder(input.Options{})
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			for b.Loop() {
				in, err := builder.Build(req)
				if err != nil {
					b.Fatal(err)
				}
				if d := eng.Decide(ctx, in); d.Allowed != (name == "allow") {
					b.Fatalf("%s decided %+v", name, d)
				}
			}
		})
	}
}

// BenchmarkCheck is the whole handler without the network: input, decision,
// response, metrics; decision log off. "deadline" is a call that carries
// a deadline within the evaluation limit, as Envoy's do (its ext_authz
// timeout, 200ms by default); "no-deadline" one without.
func BenchmarkCheck(b *testing.B) {
	eng, reqs := benchSetup(b)
	// An evaluation limit longer than the benchmark, so that one context
	// with a deadline inside it serves every call.
	srv, err := authz.New(authz.Config{Engine: eng, Limits: authz.Limits{EvalTimeout: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	deadline, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, bc := range []struct {
		name string
		ctx  context.Context
	}{{"no-deadline", context.Background()}, {"deadline", deadline}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			defer benchcpu.Start(b)()
			for b.Loop() {
				resp, err := srv.Check(bc.ctx, reqs["allow"])
				if err != nil || code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
					b.Fatal(resp, err)
				}
			}
		})
	}
}

// BenchmarkCheckGRPC is Check over a loopback gRPC connection with
// parallel callers; decision log off.
func BenchmarkCheckGRPC(b *testing.B) {
	eng, reqs := benchSetup(b)
	srv, err := authz.New(authz.Config{Engine: eng})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	b.ReportAllocs()
	defer benchcpu.Start(b)()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Check(context.Background(), reqs["allow"])
			if err != nil || code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
				b.Error(resp, err)
				return
			}
		}
	})
}
