package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/nodeattest"
	"github.com/sigilhq/sigil/agent/svidstore"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/clock"
)

// callTimeout bounds one attestation or renewal call.
const callTimeout = 30 * time.Second

// bootstrap uses the persisted identity when it is still valid; otherwise
// it attests, retrying while the CA is unreachable.
func (a *Agent) bootstrap(ctx context.Context) error {
	prev, err := svidstore.Load(a.cfg.DataDir, a.cfg.TrustDomain)
	switch {
	case errors.Is(err, svidstore.ErrNotFound):
		prev = nil
	case err != nil:
		return fmt.Errorf("%w (remove the file to attest again)", err)
	}
	if prev != nil && a.cfg.Clock.Now().Before(prev.NotAfter()) {
		a.mu.Lock()
		a.id = prev
		a.resumed = true
		a.mu.Unlock()
		if err := a.reconnectSame(ctx); err != nil {
			return err
		}
		a.metrics.expiry.Set(float64(prev.NotAfter().Unix()))
		a.cfg.Logger.Info("using the persisted agent identity", "agent_id", prev.SVID.ID.String(), "expires", prev.NotAfter())
		return nil
	}
	if prev != nil {
		a.cfg.Logger.Warn("the persisted agent SVID has expired: attesting again", "agent_id", prev.SVID.ID.String(), "expired", prev.NotAfter())
	}
	return a.attestRetrying(ctx, prev)
}

// attestRetrying attests, waiting out an unreachable CA with backoff.
func (a *Agent) attestRetrying(ctx context.Context, prev *svidstore.Identity) error {
	for attempt := 0; ; attempt++ {
		err := a.attest(ctx, prev)
		if err == nil {
			return nil
		}
		if !transient(err) {
			return err
		}
		d := cache.Backoff(attempt, a.cfg.RetryMin, a.cfg.RetryMax, a.cfg.Rand())
		next := a.servers.next(ctx)
		a.cfg.Logger.Warn("cannot reach the CA to attest; retrying", "error", err, "retry_in", d, "server", next)
		if !clock.Sleep(ctx, a.cfg.Clock, d) {
			return ctx.Err()
		}
	}
}

// transient reports whether a call may succeed later unchanged.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// refused reports whether the CA refused the agent itself.
func refused(err error) bool {
	c := status.Code(err)
	return c == codes.PermissionDenied || c == codes.Unauthenticated
}

func joinToken(att nodeattest.Attestor) (string, bool) {
	switch jt := att.(type) {
	case nodeattest.JoinToken:
		return jt.Token, true
	case *nodeattest.JoinToken:
		return jt.Token, true
	}
	return "", false
}

// attest proves the node with the configured attestor over TLS (verifying
// the CA by its ID and the current roots), and installs the SVID it gets.
func (a *Agent) attest(ctx context.Context, prev *svidstore.Identity) error {
	if a.cfg.Attestor == nil {
		return ErrNoAttestor
	}
	var tokenHash string
	if tok, ok := joinToken(a.cfg.Attestor); ok {
		tokenHash = svidstore.HashToken(tok)
		if prev != nil && prev.JoinTokenSHA256 == tokenHash {
			return ErrTokenUsed
		}
	}
	if len(a.roots()) == 0 {
		return ErrNoBundle
	}
	key, csr, err := newAgentKey()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	addr := a.servers.current(ctx)
	if err := a.checkServer(ctx, addr); err != nil {
		return err
	}
	cc, err := a.dial(addr, false)
	if err != nil {
		return err
	}
	defer cc.Close()
	res, err := nodeattest.Attest(ctx, nodev1.NewNodeClient(cc), a.cfg.Attestor, csr)
	if err != nil {
		a.metrics.attestations.WithLabelValues("error").Inc()
		if tokenHash != "" && refused(err) {
			return fmt.Errorf("%w (a join token works once and expires: create a new one with `sigil token create`)", err)
		}
		return err
	}
	svid, roots, err := a.checkAgentSVID(res, key)
	if err != nil {
		a.metrics.attestations.WithLabelValues("error").Inc()
		return err
	}
	if prev != nil {
		a.cache.Resync()
	}
	if err := a.install(&svidstore.Identity{SVID: svid, Bundle: roots, JoinTokenSHA256: tokenHash}); err != nil {
		return err
	}
	a.learnRoots(res.GetUpstreamRoots())
	a.metrics.attestations.WithLabelValues("ok").Inc()
	a.metrics.expiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	a.cfg.Logger.Info("node attested", "agent_id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
	return nil
}

// runRenewal renews the agent's SVID at half its life ±10%, or at once when
// the CA refused the agent; if the CA refuses the renewal itself (evicted,
// banned, expired), the agent attests again when its attestor can. When
// the SVID expires before it was renewed, the agent attests again with an
// attestor that can do so (x509pop), and otherwise returns an error that
// says what the operator must do.
func (a *Agent) runRenewal(ctx context.Context) error {
	jitter := a.cfg.Rand()
	attempt := 0
	for {
		leaf := a.current().SVID.Certificates[0]
		now := a.cfg.Clock.Now()
		if !now.Before(leaf.NotAfter) {
			if err := a.recoverExpired(ctx, leaf.NotAfter); err != nil {
				return err
			}
			attempt, jitter = 0, a.cfg.Rand()
			continue
		}
		wait := cache.RotateAt(leaf.NotBefore, leaf.NotAfter, jitter).Sub(now)
		if attempt > 0 {
			// Already due, and the last try failed.
			wait = cache.Backoff(attempt-1, a.cfg.RetryMin, a.cfg.RetryMax, a.cfg.Rand())
		}
		// Wake at the latest when the SVID expires: renewing over mTLS
		// with an expired SVID cannot work.
		wait = min(wait, leaf.NotAfter.Sub(now))
		t := a.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		case <-a.denied:
			t.Stop()
		}
		if !a.cfg.Clock.Now().Before(leaf.NotAfter) {
			continue
		}
		err := a.renew(ctx)
		switch {
		case err == nil:
			attempt, jitter = 0, a.cfg.Rand()
			a.setProblem("")
		case ctx.Err() != nil:
			return nil
		case refused(err):
			a.metrics.renewals.WithLabelValues("denied").Inc()
			a.cfg.Logger.Warn("the CA refused to renew the agent's SVID: attesting again", "error", err)
			if err := a.attest(ctx, a.current()); err != nil {
				if transient(err) {
					attempt++
					continue
				}
				return fmt.Errorf("attest again after the CA refused the agent: %w", err)
			}
			attempt, jitter = 0, a.cfg.Rand()
			a.setProblem("")
		default:
			a.metrics.renewals.WithLabelValues("error").Inc()
			if uerr := a.untrustedCA(ctx); uerr != nil {
				a.cfg.Logger.Error("cannot renew the agent's SVID: the CA cannot be verified", "error", uerr)
				a.setProblem(uerr.Error())
			} else {
				a.cfg.Logger.Warn("renewing the agent's SVID failed; will retry", "error", err, "attempt", attempt, "expires", leaf.NotAfter)
			}
			attempt++
		}
	}
}

// recoverExpired handles an agent SVID that expired at notAfter before it
// was renewed: it attests again (waiting out an unreachable CA) when the
// attestor can, and otherwise returns an error saying what to do.
func (a *Agent) recoverExpired(ctx context.Context, notAfter time.Time) error {
	at := notAfter.UTC().Format(time.RFC3339)
	prev := a.current()
	a.metrics.renewals.WithLabelValues("expired").Inc()
	if _, ok := joinToken(a.cfg.Attestor); ok || a.cfg.Attestor == nil {
		err := fmt.Errorf("agent SVID expired at %s; join-token agents cannot re-attest: %w", at, ErrTokenUsed)
		if a.cfg.Attestor == nil {
			err = fmt.Errorf("agent SVID expired at %s: %w", at, ErrNoAttestor)
		}
		a.setProblem(err.Error())
		a.cfg.Logger.Error("the agent's SVID expired before the CA renewed it", "expired", notAfter, "error", err)
		return err
	}
	a.setProblem(fmt.Sprintf("agent SVID expired at %s; attesting again", at))
	a.cfg.Logger.Error("the agent's SVID expired before the CA renewed it: attesting again", "expired", notAfter)
	if err := a.attestRetrying(ctx, prev); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		if uerr := a.untrustedCA(ctx); uerr != nil {
			err = uerr
		}
		err = fmt.Errorf("agent SVID expired at %s and attesting again failed: %w", at, err)
		a.setProblem(err.Error())
		a.cfg.Logger.Error("the agent cannot recover its identity", "error", err)
		return err
	}
	a.setProblem("")
	return nil
}

// untrustedCA returns an error saying how to re-bootstrap when the CA
// answers but cannot be verified with the agent's trust bundle (its root
// changed); nil when it verifies or cannot be reached at all.
func (a *Agent) untrustedCA(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	addr := a.servers.current(ctx)
	if c := a.conn.current(); c != nil {
		addr = c.addr
	}
	err := a.checkServer(ctx, addr)
	if err == nil || transient(err) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%w; if the CA has a new root, re-bootstrap the agent: put the new root in trust_bundle_file, "+
		"delete %s, and restart the agent (with a new join token from `sigil token create` if it attests by join token)",
		err, filepath.Join(a.cfg.DataDir, svidstore.FileName))
}

// renew asks the CA for a new agent SVID over a new key and installs it.
func (a *Agent) renew(ctx context.Context) error {
	key, csr, err := newAgentKey()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := nodev1.NewNodeClient(a.conn).RenewAgent(ctx, &nodev1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("renew agent svid: %w", err)
	}
	svid, roots, err := a.checkAgentSVID(resp.GetSvid(), key)
	if err != nil {
		return err
	}
	prev := a.current()
	if err := a.install(&svidstore.Identity{SVID: svid, Bundle: roots, JoinTokenSHA256: prev.JoinTokenSHA256}); err != nil {
		return err
	}
	a.learnRoots(resp.GetSvid().GetUpstreamRoots())
	a.metrics.renewals.WithLabelValues("ok").Inc()
	a.metrics.expiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	a.cfg.Logger.Info("agent svid renewed", "agent_id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
	return nil
}
