// Package decisionreadtest writes real decision logs (through decisionlog.Logger) for tests of their readers.
package decisionreadtest

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

// Decision is one decision to log, with its request (may be nil).
type Decision struct {
	Entry   decisionlog.Entry
	Request *authv3.CheckRequest
}

// WriteLog appends n decisions made by gen to the decision log at path,
// through a real Logger that is stopped (all lines written) on return.
func WriteLog(tb testing.TB, path string, n int, gen func(i int) Decision) {
	tb.Helper()
	l, err := decisionlog.New(decisionlog.Config{
		Sinks:      []decisionlog.Sink{decisionlog.NewFileSink(path, 0, 0)},
		LogRequest: true,
		Buffer:     n + 1,
		OnFailure:  decisionlog.FailAllow,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	for i := range n {
		d := gen(i)
		if err := l.Log(ctx, d.Entry, d.Request); err != nil {
			cancel()
			<-errc
			tb.Fatalf("log decision %d: %v", i, err)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		tb.Fatalf("decision logger: %v", err)
	}
	if d := l.Dropped(); d != 0 {
		tb.Fatalf("decision logger dropped %d decisions", d)
	}
}
