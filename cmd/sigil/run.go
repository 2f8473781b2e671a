package main

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/sigilhq/sigil/internal/health"
)

// runAll runs every fn until ctx ends or one of them fails.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, fn := range fns {
		g.Go(func() error { return fn(ctx) })
	}
	return g.Wait()
}

// withHealth is runs plus, when hc names an address or a listener, the
// health server hc describes.
func withHealth(hc health.Config, runs ...func(context.Context) error) ([]func(context.Context) error, error) {
	if hc.Address == "" && hc.Listener == nil {
		return runs, nil
	}
	h, err := health.New(hc)
	if err != nil {
		return nil, err
	}
	return append(runs, h.Run), nil
}
