package authz

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/policysrc"
)

// Source yields the latest policy revision.
type Source interface {
	Load(ctx context.Context) (engine.Policy, error)
}

// Loader is where new revisions go (an *engine.Engine).
type Loader interface {
	Load(ctx context.Context, p engine.Policy) error
	Revision() string
}

// Reloader polls a Source and loads changed revisions into a Loader. A
// revision that fails to load is refused, logged and counted; the last good
// one keeps serving.
type Reloader struct {
	Name     string
	Source   Source
	Target   Loader
	Interval time.Duration
	Logger   *slog.Logger
	Metrics  *Metrics

	refused    string
	refusedErr string
}

// Once loads the source if its revision changed. It returns the load error
// (nil when unchanged).
func (r *Reloader) Once(ctx context.Context) error {
	p, err := r.Source.Load(ctx)
	if errors.Is(err, policysrc.ErrNotModified) {
		return nil
	}
	if err == nil {
		if p.Revision == r.Target.Revision() || p.Revision == r.refused {
			return nil
		}
		err = r.Target.Load(ctx, p)
	}
	if err != nil {
		if err.Error() == r.refusedErr {
			return err // already logged and counted
		}
		r.refusedErr = err.Error()
		r.Metrics.ReloadFailed()
		r.logger().Error("policy refused, last good revision keeps serving", "policy", r.Name, "revision", p.Revision, "serving", r.Target.Revision(), "error", err)
		r.refused = p.Revision
		return err
	}
	r.refused, r.refusedErr = "", ""
	r.Metrics.Reloaded(p.Revision)
	r.logger().Info("policy loaded", "policy", r.Name, "revision", p.Revision)
	return nil
}

func (r *Reloader) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Run calls Once every Interval (default 1s) until ctx ends.
func (r *Reloader) Run(ctx context.Context) error {
	iv := r.Interval
	if iv <= 0 {
		iv = time.Second
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = r.Once(ctx)
		}
	}
}
