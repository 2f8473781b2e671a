package testrun

import (
	"context"
	"testing"
	"time"
)

// StopTimeout is how long Run may take to return after its context ends.
const StopTimeout = 5 * time.Second

// Start calls run in a goroutine with a context that the test's cleanup
// cancels; the cleanup then reports an error when run returned one or did
// not return within StopTimeout.
func Start(t testing.TB, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(StopTimeout):
			t.Errorf("Run did not return within %s of cancel", StopTimeout)
		}
	})
}
