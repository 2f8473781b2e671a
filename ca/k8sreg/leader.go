package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease names the Lease that elects the one reconciling CA replica.
type Lease struct {
	Namespace string // default sigil
	Name      string // default sigil-ca-registrar
	// Identity names this replica in the Lease; required and distinct per replica.
	Identity string
	// Duration, RenewDeadline and RetryPeriod are client-go's leader
	// election timings (defaults 15s, 10s, 2s).
	Duration, RenewDeadline, RetryPeriod time.Duration
}

// Run takes part in the election described by l and reconciles while it
// leads; a replica that loses the lease stops reconciling and stands again.
// It returns when ctx ends, releasing the lease if it holds it.
func (r *Reconciler) Run(ctx context.Context, l Lease) error {
	if l.Identity == "" {
		return errors.New("k8sreg: lease identity required")
	}
	if l.Namespace == "" {
		l.Namespace = "sigil"
	}
	if l.Name == "" {
		l.Name = "sigil-ca-registrar"
	}
	if l.Duration <= 0 {
		l.Duration = 15 * time.Second
	}
	if l.RenewDeadline <= 0 {
		l.RenewDeadline = 10 * time.Second
	}
	if l.RetryPeriod <= 0 {
		l.RetryPeriod = 2 * time.Second
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, l.Namespace, l.Name,
		r.cfg.Client.CoreV1(), r.cfg.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: l.Identity})
	if err != nil {
		return fmt.Errorf("k8sreg: lease lock: %w", err)
	}
	for ctx.Err() == nil {
		if err := r.elect(ctx, l, lock); err != nil {
			return err
		}
	}
	return nil
}

// elect runs one term: stand, lead until the lease is lost or ctx ends,
// and return only once reconciling has stopped, so a replica that lost the
// lease never writes beside the new leader.
func (r *Reconciler) elect(ctx context.Context, l Lease, lock resourcelock.Interface) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	leading := make(chan context.Context, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: l.Duration, RenewDeadline: l.RenewDeadline, RetryPeriod: l.RetryPeriod,
		ReleaseOnCancel: true, Name: l.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { leading <- ctx },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("k8sreg: leader election: %w", err)
	}
	elected := make(chan struct{})
	go func() {
		defer close(elected)
		le.Run(ctx)
	}()
	var runErr error
	select {
	case lctx := <-leading:
		// lctx ends when the lease is lost or ctx ends.
		r.log.Info("leading: reconciling kubernetes entries", "lease", l.Namespace+"/"+l.Name, "identity", l.Identity)
		runErr = r.RunLeading(lctx)
		r.log.Info("stopped leading", "lease", l.Namespace+"/"+l.Name, "identity", l.Identity)
		cancel() // a failed reconciler gives the lease up
	case <-elected:
	}
	<-elected
	return runErr
}
