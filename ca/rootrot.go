package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sigilhq/sigil/ca/store"
)

// Root rotation.
//
// The bundle's authorities are the CA's signing certificates, not the
// root: workloads and Envoy trust a signing key because it is in the
// bundle. The upstream root is the agents' bootstrap trust (what they
// verify the CA by before their first sync, or when every authority they
// hold has expired), and what every signing key chains to. Rotating it
// without downtime is therefore:
//
//  1. prepared: a new root (self_signed: a new key and self-signed
//     certificate, added to cert_path after the active one) joins the
//     roots the CA hands agents at attestation and renewal, beside the
//     old one;
//  2. published: the new root signs a new X.509 signing key, which enters
//     the bundle as a prepared key (the bundle sequence grows; the node API
//     pushes it to agents at once);
//  3. active: once the bundle has been out for max(bundle_refresh_hint,
//     rekey_publish_wait) — so federated peers that fetch by the refresh
//     hint hold the key too — and every agent with an unexpired SVID has
//     renewed or attested since the publication (so it holds the new root;
//     an agent that never does is waited for until its SVID expires), the
//     key becomes active: new SVIDs chain to the new root, and the old root
//     becomes retiring;
//  4. retiring → gone: the old root stays among the roots (cross-trusted:
//     agents still accept it) while any X.509 key it issued is in the
//     journal; keys expire within ca_ttl, and every SVID within its key's
//     life, so when the last one leaves, the old root leaves too (out of
//     cert_path, its key destroyed where the key manager can).
//
// The state lives in the CA journal (Roots), so a restarted CA resumes;
// Init reconciles cert_path with it after a crash between the two writes.
// Run advances it (rootStep). A changed disk or step_ca upstream root
// (new files, restart) is noticed by Init and rolled the same way from
// step 2, the old root kept as a trust anchor from the journal until its
// keys leave.

// RootState is where an upstream root stands in a root rotation.
type RootState string

// The root states, in order.
const (
	RootPrepared  RootState = "prepared"  // among the roots agents receive; nothing signed by it yet
	RootPublished RootState = "published" // a signing key of it is in the bundle, not yet signing
	RootActive    RootState = "active"    // signs the CA's keys
	RootRetiring  RootState = "retiring"  // superseded; kept while keys it issued live
	RootGone      RootState = "gone"      // left the roots
)

// maxGoneRoots is how many gone roots the journal remembers for status.
const maxGoneRoots = 4

// rootRecord is one root of the root journal.
type rootRecord struct {
	ID        string    `json:"id"`   // hex SHA-256 of the SubjectPublicKeyInfo
	Cert      []byte    `json:"cert"` // DER
	State     RootState `json:"state"`
	Prepared  time.Time `json:"prepared,omitzero"`
	Published time.Time `json:"published,omitzero"`
	Activated time.Time `json:"activated,omitzero"`
	Retired   time.Time `json:"retired,omitzero"` // its successor became active
	Gone      time.Time `json:"gone,omitzero"`
	// KeyID is the X.509 key published under it in the published state.
	KeyID string `json:"key_id,omitempty"`
}

// RootRotator is an upstream that can make and switch roots
// (upstream.SelfSigned).
type RootRotator interface {
	PrepareRoot(ctx context.Context) (*x509.Certificate, error)
	SignCAUnder(ctx context.Context, root, tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error)
	ActivateRoot(ctx context.Context, root *x509.Certificate) error
	RemoveRoot(ctx context.Context, root *x509.Certificate) error
}

// Errors of a root rotation operators act on.
var (
	ErrRootRotationUnsupported = errors.New("root rotation needs upstream type self_signed; a disk or step_ca upstream " +
		"rolls to a new root when its configuration changes and the CA restarts")
	ErrRootRotationInProgress = errors.New("a root rotation is in progress: see `sigil ca status`")
	// ErrRootRotationReplicas: the new root's key would exist on this
	// replica only, and the other replicas would keep signing under the
	// old root, which could then never retire.
	ErrRootRotationReplicas = errors.New("other CA replicas share this store: root rotation runs on a single replica")
)

// RootStatus describes one root of the root journal.
type RootStatus struct {
	ID        string
	Subject   string
	State     RootState
	NotBefore time.Time
	NotAfter  time.Time
	Prepared  time.Time
	Published time.Time
	Activated time.Time
	Retired   time.Time
	Gone      time.Time
	// Waiting says what the rotation waits for (published and retiring
	// roots); empty when nothing.
	Waiting string
}

func rootPublishing(doc journalDoc) bool {
	return slices.ContainsFunc(doc.Roots, func(r rootRecord) bool { return r.State == RootPrepared || r.State == RootPublished })
}

// rootPublishWait is how long a new root's key is in the bundle before it
// signs: at least the refresh hint, so that every verifier that fetches by
// it has the key.
func (c *CA) rootPublishWait() time.Duration { return max(c.cfg.RefreshHint, c.cfg.RekeyPublishWait) }

func (r rootRecord) cert() (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(r.Cert)
	if err != nil {
		return nil, fmt.Errorf("ca journal: root %s: %w", r.ID, err)
	}
	return cert, nil
}

// journalRoots are the roots of the journal that have not left.
func journalRoots(doc journalDoc) []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range doc.Roots {
		if r.State == RootGone {
			continue
		}
		if cert, err := r.cert(); err == nil {
			out = append(out, cert)
		}
	}
	return out
}

// allRoots are the upstream's roots and the journal's roots that have not
// left (a changed disk upstream no longer names the old one).
func allRoots(up []*x509.Certificate, doc journalDoc) []*x509.Certificate {
	out := slices.Clone(up)
	for _, r := range journalRoots(doc) {
		if !slices.ContainsFunc(out, func(c *x509.Certificate) bool { return bytes.Equal(c.Raw, r.Raw) }) {
			out = append(out, r)
		}
	}
	return out
}

func newRootRecord(cert *x509.Certificate, state RootState, at time.Time) rootRecord {
	r := rootRecord{ID: keyIDForCert(cert), Cert: cert.Raw, State: state}
	switch state {
	case RootActive:
		r.Activated = at
	case RootPrepared:
		r.Prepared = at
	}
	return r
}

func rootIndex(doc journalDoc, id string) int {
	return slices.IndexFunc(doc.Roots, func(r rootRecord) bool { return r.ID == id })
}

// reconcileRoots brings the root journal and the upstream into step at
// Init. A journal without roots (first start, or written by a sigil before
// root rotation) records the upstream's roots as active. A self_signed root
// in cert_path that the journal does not know was prepared by a rotation
// that stopped before its journal write: it resumes as prepared. For a
// disk or step_ca upstream, a root the journal does not know is a changed
// upstream: it is rolled in from the published step, and active roots the
// upstream no longer names retire once the new one is active.
func (c *CA) reconcileRoots(ctx context.Context, doc *journalDoc) (bool, error) {
	up, err := c.cfg.Upstream.Roots(ctx)
	if err != nil {
		return false, fmt.Errorf("root journal: upstream roots: %w", err)
	}
	now := c.cfg.Now()
	rr, rotator := c.cfg.Upstream.(RootRotator)
	hasActive := slices.ContainsFunc(doc.Roots, func(r rootRecord) bool { return r.State == RootActive })
	changed := false
	inUp := func(id string) *x509.Certificate {
		for _, r := range up {
			if keyIDForCert(r) == id {
				return r
			}
		}
		return nil
	}
	if rotator {
		for i, rec := range doc.Roots {
			cert := inUp(rec.ID)
			if old, err := rec.cert(); err == nil && cert == nil && rec.State != RootGone && rec.State != RootActive && !now.Before(old.NotAfter) {
				// A retiring root that expired while the CA was down:
				// upstream.NewSelfSigned dropped it, and so do we.
				doc.Roots[i].State, doc.Roots[i].Gone, changed = RootGone, now, true
				continue
			}
			switch {
			case rec.State == RootGone && cert != nil:
				if err := rr.RemoveRoot(ctx, cert); err != nil {
					return false, fmt.Errorf("root journal: finish removing root %s: %w", rec.ID[:16], err)
				}
			case rec.State == RootGone:
			case cert == nil:
				return false, fmt.Errorf("%w: the root journal has root %s (%s) but the upstream's certificate file does not: "+
					"restore the certificate file with every root it held: %s", ErrStateMismatch, rec.ID[:16], rec.State, mismatchHint)
			case rec.State == RootActive && keyIDForCert(up[0]) != rec.ID:
				// The journal recorded the activation; cert_path was not
				// rewritten yet.
				if err := rr.ActivateRoot(ctx, cert); err != nil {
					return false, fmt.Errorf("root journal: finish activating root %s: %w", rec.ID[:16], err)
				}
			}
		}
	}
	for i, r := range up {
		if rootIndex(*doc, keyIDForCert(r)) >= 0 {
			continue
		}
		changed = true
		switch {
		case !hasActive && (!rotator || i == 0):
			rec := newRootRecord(r, RootActive, r.NotBefore)
			doc.Roots = append(doc.Roots, rec)
		default:
			doc.Roots = append(doc.Roots, newRootRecord(r, RootPrepared, now))
			c.cfg.Logger.Warn("a new upstream root: rolling it in", "root_id", keyIDForCert(r), "subject", r.Subject.String())
		}
	}
	return changed, nil
}

// RotateRoot starts a root rotation: a new root is prepared and published
// now; Run activates it and retires the old one when their time comes.
func (c *CA) RotateRoot(ctx context.Context) (RootStatus, error) {
	rr, ok := c.cfg.Upstream.(RootRotator)
	if !ok {
		return RootStatus{}, ErrRootRotationUnsupported
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	if before == nil {
		return RootStatus{}, ErrNotReady
	}
	if rootPublishing(before.doc) {
		return RootStatus{}, ErrRootRotationInProgress
	}
	if err := c.checkSingleReplica(ctx, before.doc); err != nil {
		return RootStatus{}, err
	}
	root, err := rr.PrepareRoot(ctx)
	if err != nil {
		return RootStatus{}, fmt.Errorf("rotate root: %w", err)
	}
	now := c.cfg.Now()
	doc := before.doc.clone()
	doc.Roots = append(doc.Roots, newRootRecord(root, RootPrepared, now))
	if err := c.commit(ctx, doc); err != nil {
		return RootStatus{}, fmt.Errorf("rotate root: %w", err)
	}
	id := keyIDForCert(root)
	c.cfg.Logger.Warn("root rotation started: new root prepared", "root_id", id, "not_after", root.NotAfter)
	c.audit(ctx, "ca.root.prepare", id, fmt.Sprintf(`{"not_after":%q}`, root.NotAfter.UTC().Format(time.RFC3339)))
	// Publish at once; if it fails, Run retries it.
	if err := c.rootPublishLocked(ctx, id); err != nil {
		c.cfg.Logger.Error("root rotation: publish failed; retrying", "error", err)
	}
	for _, s := range c.rootStatuses(ctx, c.cur.Load()) {
		if s.ID == id {
			return s, nil
		}
	}
	return RootStatus{}, fmt.Errorf("rotate root: root %s vanished", id)
}

// checkSingleReplica refuses a root rotation while the shared bundle holds
// another replica's unexpired signing key.
func (c *CA) checkSingleReplica(ctx context.Context, doc journalDoc) error {
	have, err := c.cfg.Store.GetBundle(ctx, c.cfg.TrustDomain.Name())
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotate root: %w", err)
	}
	own := map[string]bool{}
	for _, r := range doc.X509 {
		own[r.ID] = true
	}
	for _, id := range doc.RevokedX509 {
		own[id] = true
	}
	now := c.cfg.Now()
	for _, der := range have.X509Authorities {
		cert, err := x509.ParseCertificate(der)
		if err != nil || !now.Before(cert.NotAfter) || own[keyIDForCert(cert)] {
			continue
		}
		return fmt.Errorf("%w: signing key %s in the bundle is another replica's (it expires at %s). Stop the other replicas "+
			"and wait for their keys to expire, rotate here, then copy cert_path and every root key to them before they start again",
			ErrRootRotationReplicas, keyIDForCert(cert)[:16], cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// rootStep advances a root rotation by at most one step. Run calls it
// every tick; it is cheap when nothing is due.
func (c *CA) rootStep(ctx context.Context) error {
	st := c.cur.Load()
	if st == nil {
		return ErrNotReady
	}
	now := c.cfg.Now()
	for _, r := range st.doc.Roots {
		switch r.State {
		case RootPrepared:
			c.mu.Lock()
			err := c.rootPublishLocked(ctx, r.ID)
			c.mu.Unlock()
			return err
		case RootPublished:
			if now.Before(r.Published.Add(c.rootPublishWait())) {
				return nil
			}
			behind, err := c.agentsBehind(ctx, r.Published, now)
			if err != nil || behind > 0 {
				return err
			}
			return c.rootActivate(ctx, r.ID)
		case RootRetiring:
			if c.rootInUse(st, r) {
				continue
			}
			if err := c.rootRetire(ctx, r.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// rootPublishLocked signs a new X.509 key under the prepared root and
// publishes it. Callers hold c.mu.
func (c *CA) rootPublishLocked(ctx context.Context, id string) error {
	before := c.cur.Load()
	doc := before.doc.clone()
	i := rootIndex(doc, id)
	if i < 0 || (doc.Roots[i].State != RootPrepared && doc.Roots[i].State != RootPublished) {
		return nil
	}
	root, err := doc.Roots[i].cert()
	if err != nil {
		return err
	}
	now := c.cfg.Now()
	under := root
	if _, ok := c.cfg.Upstream.(RootRotator); !ok {
		under = nil // a changed disk or step_ca upstream signs under its new root anyway
	}
	if err := c.prepareUnder(ctx, &doc, X509, now, under); err != nil {
		return fmt.Errorf("root rotation: publish a key of the new root: %w", err)
	}
	k, _ := preparedIndex(doc, X509)
	top, err := x509.ParseCertificate(doc.X509[k].Chain[len(doc.X509[k].Chain)-1])
	if err != nil || !issuedUnder(top, []*x509.Certificate{root}) {
		return fmt.Errorf("root rotation: the upstream signed the new key under another root than %s", id[:16])
	}
	doc.Roots[i].State, doc.Roots[i].Published, doc.Roots[i].KeyID = RootPublished, now, doc.X509[k].ID
	if err := c.commit(ctx, doc); err != nil {
		return fmt.Errorf("root rotation: %w", err)
	}
	c.logChanges(ctx, before, c.cur.Load())
	if err := c.publishBundle(ctx); err != nil {
		return fmt.Errorf("root rotation: %w", err)
	}
	c.cfg.Logger.Warn("root rotation: a key of the new root is in the bundle; waiting for agents and peers",
		"root_id", id, "key_id", doc.X509[k].ID, "publish_wait", c.rootPublishWait())
	c.audit(ctx, "ca.root.publish", id, fmt.Sprintf(`{"key_id":%q}`, doc.X509[k].ID))
	return nil
}

// agentsBehind counts the agents with an unexpired SVID that have neither
// renewed nor attested since the new root was published, so do not hold
// it yet. A store that cannot list agents counts none.
func (c *CA) agentsBehind(ctx context.Context, since, now time.Time) (int, error) {
	l, ok := c.cfg.Store.(interface {
		ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error)
	})
	if !ok {
		return 0, nil
	}
	n := 0
	f := store.AgentFilter{Limit: 1000}
	for {
		page, err := l.ListAgents(ctx, f)
		if err != nil {
			return 0, fmt.Errorf("root rotation: list agents: %w", err)
		}
		for _, a := range page {
			if !a.Banned && now.Before(a.ExpiresAt) && a.UpdatedAt.Before(since) {
				n++
			}
		}
		if len(page) < f.Limit {
			return n, nil
		}
		f.AfterID = page[len(page)-1].ID
	}
}

// rootActivate makes the new root's published key active, the new root
// active and the previous active roots retiring.
func (c *CA) rootActivate(ctx context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	doc := before.doc.clone()
	i := rootIndex(doc, id)
	if i < 0 || doc.Roots[i].State != RootPublished {
		return nil
	}
	root, err := doc.Roots[i].cert()
	if err != nil {
		return err
	}
	k := slices.IndexFunc(doc.X509, func(r x509Record) bool { return r.ID == doc.Roots[i].KeyID })
	if k < 0 || doc.X509[k].State == Old || doc.X509[k].Tainted {
		// Replaced (ca prepare), rotated past or tainted: publish another
		// key of the new root and wait again.
		c.cfg.Logger.Warn("root rotation: the new root's published key is gone; publishing another", "root_id", id)
		return c.rootPublishLocked(ctx, id)
	}
	now := c.cfg.Now()
	if doc.X509[k].State == Prepared {
		activateInto(&doc, X509, now)
	}
	up, err := c.cfg.Upstream.Roots(ctx)
	if err != nil {
		return fmt.Errorf("root rotation: upstream roots: %w", err)
	}
	_, rotator := c.cfg.Upstream.(RootRotator)
	for j := range doc.Roots {
		switch {
		case j == i:
			doc.Roots[j].State, doc.Roots[j].Activated = RootActive, now
		case doc.Roots[j].State != RootActive:
		case rotator || !issuedUnderAny(doc.Roots[j].ID, up):
			// A disk or step_ca upstream's roots that it still names
			// stay active.
			doc.Roots[j].State, doc.Roots[j].Retired = RootRetiring, now
		}
	}
	if err := c.commit(ctx, doc); err != nil {
		return fmt.Errorf("root rotation: %w", err)
	}
	if rr, ok := c.cfg.Upstream.(RootRotator); ok {
		if err := rr.ActivateRoot(ctx, root); err != nil {
			return fmt.Errorf("root rotation: %w (the journal has it active; a restart finishes it)", err)
		}
	}
	c.logChanges(ctx, before, c.cur.Load())
	if err := c.publishBundle(ctx); err != nil {
		return fmt.Errorf("root rotation: %w", err)
	}
	if err := c.refreshServerSVID(ctx, true); err != nil {
		return fmt.Errorf("root rotation: %w", err)
	}
	rec := doc.Roots[i]
	c.cfg.Logger.Warn("root rotation: new root active; the old one retires when the keys it issued expire",
		"root_id", id, "published_for", now.Sub(rec.Published), "since_prepare", now.Sub(rec.Prepared))
	c.audit(ctx, "ca.root.activate", id, fmt.Sprintf(`{"published_ms":%d}`, now.Sub(rec.Published).Milliseconds()))
	return nil
}

func issuedUnderAny(id string, roots []*x509.Certificate) bool {
	return slices.ContainsFunc(roots, func(r *x509.Certificate) bool { return keyIDForCert(r) == id })
}

// rootInUse reports whether any X.509 key of the journal chains to r.
func (c *CA) rootInUse(st *state, r rootRecord) bool {
	root, err := r.cert()
	if err != nil {
		return true
	}
	for _, s := range st.x509 {
		if issuedUnder(s.chain[len(s.chain)-1], []*x509.Certificate{root}) {
			return true
		}
	}
	return false
}

// rootRetire takes a retiring root whose keys have all left out of the
// roots.
func (c *CA) rootRetire(ctx context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	i := rootIndex(before.doc, id)
	if i < 0 || before.doc.Roots[i].State != RootRetiring || c.rootInUse(before, before.doc.Roots[i]) {
		return nil
	}
	root, err := before.doc.Roots[i].cert()
	if err != nil {
		return err
	}
	doc := before.doc.clone()
	now := c.cfg.Now()
	doc.Roots[i].State, doc.Roots[i].Gone = RootGone, now
	var gone []int
	for j, r := range doc.Roots {
		if r.State == RootGone {
			gone = append(gone, j)
		}
	}
	if n := len(gone) - maxGoneRoots; n > 0 {
		drop := map[int]bool{}
		for _, j := range gone[:n] {
			drop[j] = true
		}
		var kept []rootRecord
		for j, r := range doc.Roots {
			if !drop[j] {
				kept = append(kept, r)
			}
		}
		doc.Roots = kept
	}
	if err := c.commit(ctx, doc); err != nil {
		return fmt.Errorf("root rotation: %w", err)
	}
	if rr, ok := c.cfg.Upstream.(RootRotator); ok {
		if err := rr.RemoveRoot(ctx, root); err != nil {
			return fmt.Errorf("root rotation: %w", err)
		}
	}
	c.cfg.Logger.Warn("root rotation: the old root is gone", "root_id", id, "retired_for", now.Sub(before.doc.Roots[i].Retired))
	c.audit(ctx, "ca.root.gone", id, "{}")
	return nil
}

// rootStatuses reports the root journal.
func (c *CA) rootStatuses(ctx context.Context, st *state) []RootStatus {
	now := c.cfg.Now()
	var out []RootStatus
	for _, r := range st.doc.Roots {
		s := RootStatus{ID: r.ID, State: r.State, Prepared: r.Prepared, Published: r.Published, Activated: r.Activated, Retired: r.Retired, Gone: r.Gone}
		if cert, err := r.cert(); err == nil {
			s.Subject, s.NotBefore, s.NotAfter = cert.Subject.String(), cert.NotBefore, cert.NotAfter
		}
		switch r.State {
		case RootPrepared:
			s.Waiting = "a signing key of the new root to be published"
		case RootPublished:
			if left := r.Published.Add(c.rootPublishWait()).Sub(now); left > 0 {
				s.Waiting = fmt.Sprintf("the bundle to reach agents and peers (%s more)", left.Round(time.Second))
			} else if n, err := c.agentsBehind(ctx, r.Published, now); err != nil {
				s.Waiting = err.Error()
			} else if n > 0 {
				s.Waiting = fmt.Sprintf("%d agents to renew their SVID (and so learn the new root)", n)
			}
		case RootRetiring:
			var last time.Time
			if root, err := r.cert(); err == nil {
				for _, k := range st.x509 {
					if issuedUnder(k.chain[len(k.chain)-1], []*x509.Certificate{root}) && k.cert.NotAfter.After(last) {
						last = k.cert.NotAfter
					}
				}
			}
			if !last.IsZero() {
				s.Waiting = "the keys it issued to expire (the last at " + last.UTC().Format(time.RFC3339) + ")"
			}
		}
		out = append(out, s)
	}
	return out
}
