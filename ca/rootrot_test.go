package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/pemfile"
)

func rootStep(t *testing.T, c *ca.CA) {
	t.Helper()
	if err := c.RootStep(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// rootStates is the root journal as "state" per root ID.
func rootStates(t *testing.T, c *ca.CA) map[string]ca.RootState {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ca.RootState{}
	for _, r := range st.Roots {
		out[r.ID] = r.State
	}
	return out
}

func rootID(c *x509.Certificate) string { return ca.KeyIDForCert(c) }

// restart makes a new CA over the same store and keys, with upstream made
// afresh by newUp (so that it reloads its files).
func (e *env) restart(t *testing.T, newUp func() ca.Upstream) {
	t.Helper()
	e.up = newUp()
	c, err := ca.New(ca.Config{TrustDomain: td, Store: e.store, Keys: e.keys, Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.ca = c
}

func chainsTo(svid *ca.X509SVID, root *x509.Certificate) bool {
	top := svid.Certificates[len(svid.Certificates)-1]
	return top.CheckSignatureFrom(root) == nil
}

// A self-signed root rotates through prepared/published, active and
// retiring to gone on a fake clock, with a restart in every phase: the new
// root's key is in the bundle before it signs, SVIDs of the old root verify
// until they expire, and the old root leaves once its last key expired.
func TestRootRotation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	certPath := filepath.Join(e.dir, "root.crt")
	reload := func() ca.Upstream {
		up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: e.keys, CertPath: certPath, Now: e.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return up
	}
	roots, _ := e.ca.Roots(ctx)
	oldRoot := roots[0]
	if got := rootStates(t, e.ca); len(got) != 1 || got[rootID(oldRoot)] != ca.RootActive {
		t.Fatalf("root journal at start: %v, want the one root active", got)
	}
	oldSVID := e.sign(t, "spiffe://example.org/old")
	b0, _ := e.ca.Bundle(ctx)
	seq0, _ := b0.SequenceNumber()

	rs, err := e.ca.RotateRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs.State != ca.RootPublished || rs.Waiting == "" {
		t.Fatalf("after RotateRoot: %+v, want published and waiting", rs)
	}
	if _, err := e.ca.RotateRoot(ctx); !errors.Is(err, ca.ErrRootRotationInProgress) {
		t.Fatalf("second RotateRoot: %v, want ErrRootRotationInProgress", err)
	}
	roots, _ = e.ca.Roots(ctx)
	if len(roots) != 2 {
		t.Fatalf("roots while publishing: %d, want the old and the new", len(roots))
	}
	newRoot := roots[1]
	b1, _ := e.ca.Bundle(ctx)
	if seq1, _ := b1.SequenceNumber(); seq1 <= seq0 || len(b1.X509Authorities()) != len(b0.X509Authorities())+1 {
		t.Fatalf("bundle after publish: sequence %d→%d, authorities %d→%d; want a bump and one more", seq0, seq1, len(b0.X509Authorities()), len(b1.X509Authorities()))
	}
	if s := e.sign(t, "spiffe://example.org/w"); !chainsTo(s, oldRoot) {
		t.Fatal("an SVID chains to the new root before its activation")
	}

	// Restart mid-rotation; the wait (the refresh hint, 5m) runs on.
	e.clock.Advance(4 * time.Minute)
	e.restart(t, reload)
	rootStep(t, e.ca)
	if got := rootStates(t, e.ca)[rootID(newRoot)]; got != ca.RootPublished {
		t.Fatalf("new root after restart before the wait: %s, want published", got)
	}
	// The schedule's activation does not take the new root's key early.
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	rootStep(t, e.ca)
	got := rootStates(t, e.ca)
	if got[rootID(newRoot)] != ca.RootActive || got[rootID(oldRoot)] != ca.RootRetiring {
		t.Fatalf("after the wait: %v, want new active and old retiring", got)
	}
	newSVID := e.sign(t, "spiffe://example.org/new")
	if !chainsTo(newSVID, newRoot) {
		t.Fatal("an SVID signed after the activation does not chain to the new root")
	}
	for _, s := range []*ca.X509SVID{oldSVID, newSVID} {
		if err := e.verify(t, s, e.clock.Now()); err != nil {
			t.Fatalf("svid %s does not verify against the bundle: %v", s.ID, err)
		}
	}
	srv, err := e.ca.GetX509SVID()
	if err != nil || srv.Certificates[len(srv.Certificates)-1].CheckSignatureFrom(newRoot) != nil {
		t.Fatalf("the CA's own TLS identity does not chain to the new root: %v", err)
	}

	// A crash between the journal write and cert_path's: the file still
	// has the old root first. A restart finishes the activation.
	writePEM(t, certPath, oldRoot, newRoot)
	e.restart(t, reload)
	if on, _ := pemfile.ReadCerts(certPath); !on[0].Equal(newRoot) {
		t.Fatal("restart did not put the journal's active root first in cert_path")
	}
	if s := e.sign(t, "spiffe://example.org/after"); !chainsTo(s, newRoot) {
		t.Fatal("after restart, SVIDs do not chain to the new root")
	}
	rootStep(t, e.ca)
	if got := rootStates(t, e.ca)[rootID(oldRoot)]; got != ca.RootRetiring {
		t.Fatalf("old root while its keys live: %s, want retiring", got)
	}

	// The old root's keys expire within ca_ttl; then it leaves.
	e.clock.Advance(ca.DefaultCATTL)
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	rootStep(t, e.ca)
	if got := rootStates(t, e.ca)[rootID(oldRoot)]; got != ca.RootGone {
		t.Fatalf("old root after its keys expired: %s, want gone", got)
	}
	if roots, _ = e.ca.Roots(ctx); len(roots) != 1 || !roots[0].Equal(newRoot) {
		t.Fatalf("roots at the end: %d, want the new one alone", len(roots))
	}
	if _, err := e.keys.Signer(ctx, upstream.RootKeyName); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("the old root's key after it left: %v, want destroyed", err)
	}
	e.restart(t, reload)
	if got := rootStates(t, e.ca); got[rootID(oldRoot)] != ca.RootGone || got[rootID(newRoot)] != ca.RootActive {
		t.Fatalf("root journal after the last restart: %v", got)
	}
	// And another rotation can start.
	if _, err := e.ca.RotateRoot(ctx); err != nil {
		t.Fatal(err)
	}
}

// A disk upstream given a new certificate and key (another PKI) and
// restarted rolls to it the same way: the new root is published, activated
// after the wait, and the old root stays a trust anchor from the journal
// until its keys expire.
func TestDiskUpstreamChangeRolls(t *testing.T) {
	ctx := context.Background()
	var oldUp ca.Upstream
	e := newEnv(t, func(e *env, cfg *ca.Config) { existingPKI(t, e.clock.Now())(e, cfg); oldUp = cfg.Upstream })
	oldRoots, _ := oldUp.Roots(ctx)
	oldSVID := e.sign(t, "spiffe://example.org/old")
	if _, err := e.ca.RotateRoot(ctx); !errors.Is(err, ca.ErrRootRotationUnsupported) {
		t.Fatalf("RotateRoot on a disk upstream: %v, want ErrRootRotationUnsupported", err)
	}

	var cfg ca.Config
	existingPKI(t, e.clock.Now())(e, &cfg)
	e.restart(t, func() ca.Upstream { return cfg.Upstream })
	newRoots, _ := cfg.Upstream.Roots(ctx)
	rootStep(t, e.ca) // publish
	got := rootStates(t, e.ca)
	if got[rootID(newRoots[0])] != ca.RootPublished || got[rootID(oldRoots[0])] != ca.RootActive {
		t.Fatalf("after restart with a new PKI: %v, want new published, old active", got)
	}
	if s := e.sign(t, "spiffe://example.org/w"); !chainsTo(s, oldRoots[0]) {
		t.Fatal("an SVID left the old PKI before the new root's activation")
	}
	e.clock.Advance(ca.DefaultRefreshHint)
	rootStep(t, e.ca)
	got = rootStates(t, e.ca)
	if got[rootID(newRoots[0])] != ca.RootActive || got[rootID(oldRoots[0])] != ca.RootRetiring {
		t.Fatalf("after the wait: %v, want new active, old retiring", got)
	}
	if roots, _ := e.ca.Roots(ctx); len(roots) != 2 {
		t.Fatalf("roots while the old one retires: %d, want 2", len(roots))
	}
	if err := e.verify(t, oldSVID, e.clock.Now()); err != nil {
		t.Fatalf("an SVID of the old PKI no longer verifies: %v", err)
	}
	if s := e.sign(t, "spiffe://example.org/new"); !chainsTo(s, newRoots[0]) {
		t.Fatal("an SVID signed after the activation does not chain to the new PKI")
	}
	// A restart while the old root retires: the journal still anchors its keys.
	e.restart(t, func() ca.Upstream { return cfg.Upstream })
	e.clock.Advance(ca.DefaultCATTL)
	if err := e.ca.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	rootStep(t, e.ca)
	if got := rootStates(t, e.ca)[rootID(oldRoots[0])]; got != ca.RootGone {
		t.Fatalf("old root after its keys expired: %s, want gone", got)
	}
	if roots, _ := e.ca.Roots(ctx); len(roots) != 1 {
		t.Fatalf("roots at the end: %d, want 1", len(roots))
	}
}

// The new root activates only once every agent with an unexpired SVID has
// renewed (or attested) since the publication, so that it holds the new
// root; a banned agent is not waited for.
func TestRootActivationWaitsForAgents(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, withStoreClock(t))
	for _, a := range []store.Agent{
		{ID: "spiffe://example.org/sigil/agent/join_token/a", AttestationType: "join_token", Serial: "01", ExpiresAt: e.clock.Now().Add(time.Hour)},
		{ID: "spiffe://example.org/sigil/agent/join_token/banned", AttestationType: "join_token", Serial: "02", ExpiresAt: e.clock.Now().Add(time.Hour), Banned: true},
	} {
		if _, err := e.store.CreateAgent(ctx, "test", a); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(time.Second)
	rs, err := e.ca.RotateRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(ca.DefaultRefreshHint)
	rootStep(t, e.ca)
	st, _ := e.ca.Status(ctx)
	for _, r := range st.Roots {
		if r.ID == rs.ID && (r.State != ca.RootPublished || !strings.Contains(r.Waiting, "1 agents")) {
			t.Fatalf("with an agent that has not renewed: %s waiting for %q, want published waiting for 1 agent", r.State, r.Waiting)
		}
	}
	a, err := e.store.GetAgent(ctx, "spiffe://example.org/sigil/agent/join_token/a")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	a.Serial = "03"
	if _, err := e.store.UpdateAgent(ctx, "test", a); err != nil {
		t.Fatal(err)
	}
	rootStep(t, e.ca)
	if got := rootStates(t, e.ca)[rs.ID]; got != ca.RootActive {
		t.Fatalf("after the agent renewed: %s, want active", got)
	}
}

// With another replica's signing key in the shared bundle, a root rotation
// is refused: the other replica would keep signing under the old root.
func TestRootRotationRefusedWithReplicas(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	other, err := ca.New(ca.Config{TrustDomain: td, InstanceID: "replica-b", Store: e.store, Keys: keys.NewMemory(), Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Init(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = e.ca.RotateRoot(ctx)
	if !errors.Is(err, ca.ErrRootRotationReplicas) {
		t.Fatalf("RotateRoot beside another replica: %v, want ErrRootRotationReplicas", err)
	}
	t.Log(err)
	if roots, _ := e.ca.Roots(ctx); len(roots) != 1 {
		t.Fatalf("a refused rotation left %d roots", len(roots))
	}
}
