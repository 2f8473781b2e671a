package decisionlog_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

func benchRequest() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "GET", Path: "/items/7", Host: "cart.shop", Headers: map[string]string{"authorization": "Bearer x", "user-agent": "bench", "x-request-id": "0123456789abcdef"},
	}}}}
}

// BenchmarkLog is the cost of one Log call as the server pays it, with the
// writer running: allow (queue only), deny (wait for the batch write),
// with checkpoints, with fsync; serial (one caller: a batch per call) and
// parallel (callers share batches).
func BenchmarkLog(b *testing.B) {
	s := newSigner(&testing.T{})
	for _, bc := range []struct {
		name        string
		policy      decisionlog.FailurePolicy
		checkpoints bool
		fsync       bool
	}{
		{"allow", decisionlog.FailAllow, false, false},
		{"allow+checkpoints", decisionlog.FailAllow, true, false},
		{"deny", decisionlog.FailDeny, false, false},
		{"deny+checkpoints", decisionlog.FailDeny, true, false},
		{"deny+checkpoints+fsync", decisionlog.FailDeny, true, true},
	} {
		for _, parallel := range []bool{false, true} {
			name := bc.name + "/serial"
			if parallel {
				name = bc.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				dir := b.TempDir()
				fs := decisionlog.NewFileSink(filepath.Join(dir, "decisions.log"), 0, 0)
				fs.SetSync(bc.fsync)
				cfg := decisionlog.Config{Sinks: []decisionlog.Sink{fs}, OnFailure: bc.policy, LogRequest: true, Buffer: 1 << 16}
				if bc.checkpoints {
					cfg.Checkpoint = decisionlog.CheckpointConfig{Sink: decisionlog.NewFileSink(filepath.Join(dir, "decisions.log.checkpoints"), 0, 0), Identity: s.id}
				}
				l, err := decisionlog.New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- l.Run(ctx) }()
				e := decision(0)
				e.Time = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
				b.ReportAllocs()
				b.ResetTimer()
				if parallel {
					b.SetParallelism(8)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := l.Log(context.Background(), e, benchRequest()); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for b.Loop() {
						if err := l.Log(context.Background(), e, benchRequest()); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				if st := l.Stats(); bc.checkpoints && st.Checkpoints == 0 {
					b.Fatalf("no checkpoint written: %+v", st)
				}
			})
		}
	}
}
