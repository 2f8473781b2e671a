package testrun_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sigilhq/sigil/internal/testrun"
)

// recorder is a testing.TB that keeps its errors and runs its cleanups on
// demand, so that Start's reports can be checked.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	cleanups []func()
}

func (r *recorder) Helper()          {}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, f)
}

func (r *recorder) finish() []string {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return r.errs
}

func TestStart(t *testing.T) {
	tests := []struct {
		name    string
		run     func(context.Context) error
		wantErr string
	}{
		{name: "clean stop", run: func(ctx context.Context) error { <-ctx.Done(); return nil }},
		{name: "run fails", run: func(ctx context.Context) error { <-ctx.Done(); return errors.New("boom") }, wantErr: "Run: %v"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			started := make(chan struct{})
			testrun.Start(r, func(ctx context.Context) error { close(started); return tt.run(ctx) })
			<-started
			errs := r.finish()
			if tt.wantErr == "" && len(errs) != 0 || tt.wantErr != "" && (len(errs) != 1 || !strings.Contains(errs[0], tt.wantErr)) {
				t.Fatalf("errors = %q, want %q", errs, tt.wantErr)
			}
		})
	}
}
