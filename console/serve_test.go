package console_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sigilhq/sigil/console"
)

// A browser's speculative connection that never sends a request, and a
// request that never finishes, do not keep a stopped console from
// returning cleanly.
func TestServeStopsWithIdleAndStuckConnections(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- console.Serve(ctx, lis, h, nil) }()

	pre, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	go func() {
		resp, err := http.Get("http://" + lis.Addr().String() + "/stuck")
		if err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the stuck request never reached the handler")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after stop: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Serve did not return 60 s after its context ended")
	}
}
