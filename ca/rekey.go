package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Re-keying after a leaf revocation.
//
// go-spiffe peers and Envoy's SPIFFE validator read no CRLs: the only way
// to make them refuse a revoked leaf before it expires is to take its
// issuer out of the bundle. A revoked serial does not name its issuer (the
// CA records no issuance), so each replica re-keys every X.509 key of its
// own that may have signed it: every unexpired key that began signing at or
// before the latest revocation. A re-key is:
//
//  1. publish: a next key is prepared (a prepared key already published
//     long enough is reused) and published in the bundle; wait
//     RekeyPublishWait for the bundle to reach agents and their workloads,
//     so that verifiers trust the next key before it signs;
//  2. remint: the next key becomes active and every other key of this
//     replica is tainted; agents re-mint everything they signed at once.
//     Wait until this replica signed no X.509-SVID for RekeyRemintQuiet,
//     but at least RekeyRemintMin and at most RekeyRemintMax after the
//     activation;
//  3. the tainted keys are revoked: out of the bundle, into the revoked
//     list agents receive, private keys destroyed.
//
// The state lives in the journal, so a restarted CA resumes where it was.
// Revocations recorded while a re-key waits to activate are covered by it
// (the next key has signed nothing yet); one recorded after the activation
// starts another re-key once this one is done.

// Defaults of the re-key's waits.
const (
	// DefaultRekeyPublishWait: the node API pushes a changed bundle at
	// once (the store wakes it), agents pass it on at once; 2 s leaves a
	// loaded fleet ten times what it takes here.
	DefaultRekeyPublishWait = 2 * time.Second
	DefaultRekeyRemintMin   = time.Second
	DefaultRekeyRemintQuiet = time.Second
	DefaultRekeyRemintMax   = 30 * time.Second
	// rekeyTick is how often Run advances a re-key.
	rekeyTick = 250 * time.Millisecond
)

// rekeyRecord is the persisted state of one re-key.
type rekeyRecord struct {
	// Covers is the time of the latest revocation the re-key answers.
	Covers    time.Time `json:"covers"`
	Started   time.Time `json:"started"`
	Published time.Time `json:"published"`          // the next key entered the bundle
	Activated time.Time `json:"activated,omitzero"` // the next key signs, the old ones are tainted
	Done      time.Time `json:"done,omitzero"`      // the old keys are revoked
	NewKey    string    `json:"new_key"`            // X.509 key ID
	OldKeys   []string  `json:"old_keys,omitempty"` // tainted at activation, revoked at the end
	Aborted   string    `json:"aborted,omitempty"`  // why it stopped short (the next key vanished)
}

func (r *rekeyRecord) clone() *rekeyRecord {
	if r == nil {
		return nil
	}
	c := *r
	c.OldKeys = slices.Clone(r.OldKeys)
	return &c
}

// RekeyPhase names where a re-key stands.
type RekeyPhase string

// The re-key phases.
const (
	RekeyPublish RekeyPhase = "publish" // next key in the bundle, waiting for agents
	RekeyRemint  RekeyPhase = "remint"  // next key active, old keys tainted, waiting for agents to re-mint
	RekeyDone    RekeyPhase = "done"
	RekeyAborted RekeyPhase = "aborted"
)

// RekeyStatus describes a re-key for operators.
type RekeyStatus struct {
	Phase     RekeyPhase
	Covers    time.Time // the latest revocation it answers
	Started   time.Time
	Published time.Time
	Activated time.Time
	Done      time.Time
	NewKeyID  string
	OldKeyIDs []string
	Reason    string // why it was aborted
}

func (r *rekeyRecord) status() *RekeyStatus {
	if r == nil {
		return nil
	}
	s := &RekeyStatus{Covers: r.Covers, Started: r.Started, Published: r.Published, Activated: r.Activated, Done: r.Done,
		NewKeyID: r.NewKey, OldKeyIDs: slices.Clone(r.OldKeys), Reason: r.Aborted}
	switch {
	case r.Aborted != "":
		s.Phase = RekeyAborted
	case !r.Done.IsZero():
		s.Phase = RekeyDone
	case !r.Activated.IsZero():
		s.Phase = RekeyRemint
	default:
		s.Phase = RekeyPublish
	}
	return s
}

// signingSince is when an X.509 key began signing.
func signingSince(s *x509Slot) time.Time {
	if !s.rec.ActivatedAt.IsZero() {
		return s.rec.ActivatedAt
	}
	return s.cert.NotBefore.Add(backdate)
}

// rekeyNeeded reports whether an unexpired key of ours that has signed may
// have signed an SVID revoked at latest.
func rekeyNeeded(st *state, latest, now time.Time) bool {
	if latest.IsZero() {
		return false
	}
	for _, s := range st.x509 {
		if s.rec.State == Prepared || !now.Before(s.cert.NotAfter) {
			continue
		}
		if !signingSince(s).After(latest) {
			return true
		}
	}
	return false
}

// noteSigned records that an X.509-SVID was just signed: the re-key waits
// for agents' re-minting to go quiet.
func (c *CA) noteSigned(now time.Time) { c.lastSign.Store(now.UnixNano()) }

// kickRekey asks Run to advance the re-key now.
func (c *CA) kickRekey() {
	select {
	case c.rekeyKick <- struct{}{}:
	default:
	}
}

// rekeyStep advances the re-key by at most one phase. Run calls it every
// rekeyTick; it is cheap when there is nothing to do.
func (c *CA) rekeyStep(ctx context.Context) error {
	now := c.cfg.Now()
	st := c.cur.Load()
	if st == nil {
		return ErrNotReady
	}
	var latest time.Time
	if r := c.revoked.Load(); r != nil {
		latest = r.latest
	}
	rk := st.doc.Rekey
	switch {
	case rk == nil && !rekeyNeeded(st, latest, now):
		return nil
	case rk == nil:
		return c.rekeyStart(ctx, latest)
	case rk.Activated.IsZero():
		if now.Before(rk.Published.Add(c.cfg.RekeyPublishWait)) {
			return nil
		}
		return c.rekeyActivate(ctx)
	default:
		last := max(c.lastSign.Load(), c.started.UnixNano(), rk.Activated.UnixNano())
		quiet := !now.Before(time.Unix(0, last).Add(c.cfg.RekeyRemintQuiet))
		if now.Before(rk.Activated.Add(c.cfg.RekeyRemintMin)) ||
			(!quiet && now.Before(rk.Activated.Add(c.cfg.RekeyRemintMax))) {
			return nil
		}
		return c.rekeyFinish(ctx, quiet)
	}
}

// rekeyStart prepares and publishes the next key, or adopts a prepared one.
func (c *CA) rekeyStart(ctx context.Context, latest time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	if before.doc.Rekey != nil {
		return nil // raced with another step
	}
	now := c.cfg.Now()
	doc := before.doc.clone()
	rk := &rekeyRecord{Covers: latest, Started: now}
	if p, _ := before.find(X509, Prepared); p != nil && preparedAfter(p, latest) {
		// Published already: its wait runs from when it entered the bundle.
		rk.NewKey, rk.Published = p.rec.ID, p.cert.NotBefore.Add(backdate)
	} else {
		if err := c.prepareInto(ctx, &doc, X509, now); err != nil {
			return fmt.Errorf("re-key: %w", err)
		}
		i, _ := preparedIndex(doc, X509)
		rk.NewKey, rk.Published = doc.X509[i].ID, now
	}
	doc.Rekey = rk
	if err := c.commit(ctx, doc); err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	c.logChanges(ctx, before, c.cur.Load())
	if err := c.publishBundle(ctx); err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	c.cfg.Logger.Warn("re-key started: an svid was revoked; next key published, waiting for agents",
		"covers", latest, "new_key", rk.NewKey, "prepare", c.cfg.Now().Sub(now), "publish_wait", c.cfg.RekeyPublishWait)
	c.audit(ctx, "ca.rekey.start", rk.NewKey, fmt.Sprintf(`{"covers":%q}`, latest.UTC().Format(time.RFC3339Nano)))
	return nil
}

// preparedAfter reports whether a prepared key was made after the latest
// revocation: only such a key stands in as the next key (rekeyNeeded would
// not count an older one, but a key made before the revocation is not
// reused for it).
func preparedAfter(p *x509Slot, latest time.Time) bool {
	return p.cert.NotBefore.Add(backdate).After(latest)
}

// rekeyActivate makes the next key active and taints every other key.
func (c *CA) rekeyActivate(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	rk := before.doc.Rekey
	if rk == nil || !rk.Activated.IsZero() {
		return nil
	}
	now := c.cfg.Now()
	doc := before.doc.clone()
	i := slices.IndexFunc(doc.X509, func(r x509Record) bool { return r.ID == rk.NewKey })
	switch {
	case i < 0 || doc.X509[i].State == Old:
		// An operator replaced (prepare) or rotated past the next key:
		// start over at the next step.
		return c.rekeyAbortLocked(ctx, doc, "the next key "+rk.NewKey+" is no longer prepared or active")
	case doc.X509[i].State == Prepared:
		activateInto(&doc, X509, now)
	}
	rk = doc.Rekey
	rk.Activated = now
	for j := range doc.X509 {
		if doc.X509[j].ID != rk.NewKey {
			doc.X509[j].Tainted = true
			rk.OldKeys = append(rk.OldKeys, doc.X509[j].ID)
		}
	}
	if err := c.commit(ctx, doc); err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	c.logChanges(ctx, before, c.cur.Load())
	if err := c.publishBundle(ctx); err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	if err := c.refreshServerSVID(ctx, true); err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	c.cfg.Logger.Warn("re-key: next key active, old keys tainted, agents re-mint",
		"new_key", rk.NewKey, "old_keys", rk.OldKeys, "published_for", now.Sub(rk.Published))
	for _, id := range rk.OldKeys {
		c.audit(ctx, "ca.taint", id, `{"kind":"x509","reason":"rekey"}`)
	}
	return nil
}

// rekeyFinish revokes the tainted old keys and records the re-key as done.
func (c *CA) rekeyFinish(ctx context.Context, quiet bool) error {
	c.mu.Lock()
	before := c.cur.Load()
	rk := before.doc.Rekey
	if rk == nil || rk.Activated.IsZero() {
		c.mu.Unlock()
		return nil
	}
	now := c.cfg.Now()
	doc := before.doc.clone()
	rk = doc.Rekey
	type gone struct{ id, name string }
	var destroy []gone
	for _, id := range rk.OldKeys {
		i := slices.IndexFunc(doc.X509, func(r x509Record) bool { return r.ID == id })
		if i < 0 {
			continue // revoked by hand meanwhile, or expired
		}
		if doc.X509[i].State == Active {
			// Never leave the CA without an active key: an operator
			// activated an old key's successor chain oddly; keep it.
			continue
		}
		destroy = append(destroy, gone{id, doc.X509[i].KeyName})
		doc.RevokedX509 = append(doc.RevokedX509, id)
		doc.X509 = slices.Delete(doc.X509, i, i+1)
	}
	rk.Done = now
	doc.LastRekey, doc.Rekey = rk, nil
	if err := c.commit(ctx, doc); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("re-key: %w", err)
	}
	c.logChanges(ctx, before, c.cur.Load())
	err := c.publishBundle(ctx)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	var errs []error
	for _, g := range destroy {
		c.audit(ctx, "ca.revoke", g.id, `{"kind":"x509","reason":"rekey"}`)
		errs = append(errs, c.destroyKey(ctx, g.id, g.name))
	}
	c.cfg.Logger.Warn("re-key done: old keys revoked",
		"new_key", rk.NewKey, "revoked", len(destroy), "remint_quiet", quiet,
		"publish", rk.Activated.Sub(rk.Published), "remint", now.Sub(rk.Activated), "total", now.Sub(rk.Started))
	c.audit(ctx, "ca.rekey.done", rk.NewKey, fmt.Sprintf(`{"publish_ms":%d,"remint_ms":%d,"total_ms":%d}`,
		rk.Activated.Sub(rk.Published).Milliseconds(), now.Sub(rk.Activated).Milliseconds(), now.Sub(rk.Started).Milliseconds()))
	// A revocation after the activation needs another re-key: the next
	// step sees it.
	c.kickRekey()
	return errors.Join(errs...)
}

// rekeyAbortLocked drops the re-key in progress; the next step starts a new
// one if still needed. Callers hold c.mu.
func (c *CA) rekeyAbortLocked(ctx context.Context, doc journalDoc, why string) error {
	rk := doc.Rekey
	rk.Aborted, rk.Done = why, c.cfg.Now()
	doc.LastRekey, doc.Rekey = rk, nil
	if err := c.commit(ctx, doc); err != nil {
		return fmt.Errorf("re-key: %w", err)
	}
	c.cfg.Logger.Warn("re-key aborted; starting over if still needed", "reason", why)
	c.kickRekey()
	return nil
}
