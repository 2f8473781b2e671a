package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	neturl "net/url"
	"slices"
	"time"

	"github.com/sigilhq/sigil/ca/keys"
)

// PrepareDue reports whether a key valid over [notBefore, notAfter) has
// lived half its life at now: time to prepare (and publish) its successor.
func PrepareDue(now, notBefore, notAfter time.Time) bool {
	return !now.Before(notBefore.Add(notAfter.Sub(notBefore) / 2))
}

// ActivateDue reports whether the key has lived five sixths of its life at
// now: time to switch signing to the prepared successor.
func ActivateDue(now, notBefore, notAfter time.Time) bool {
	return !now.Before(notBefore.Add(notAfter.Sub(notBefore) * 5 / 6))
}

// Errors operators see from forced rotation.
var (
	ErrNoPrepared  = errors.New("no prepared key: run prepare first")
	ErrKeyNotFound = errors.New("no such key")
	ErrKeyActive   = errors.New("the key is active: prepare and activate a new key first")
	ErrNotTainted  = errors.New("only a tainted key can be revoked: taint it first")
)

// Rotate prepares, activates and retires keys as their lives require at the
// CA's current time, and refreshes the CA's own TLS identity.
func (c *CA) Rotate(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.rotateLocked(ctx); err != nil {
		return err
	}
	// Re-publish on every tick too: cheap when nothing changed, and it
	// restores our keys if another replica overwrote the bundle.
	if err := c.publishBundle(ctx); err != nil {
		return err
	}
	if err := c.refreshRevocations(ctx); err != nil {
		return err
	}
	return c.refreshServerSVID(ctx, false)
}

func (c *CA) rotateLocked(ctx context.Context) error {
	now := c.cfg.Now()
	before := c.cur.Load()
	doc := before.doc.clone()
	changed := false
	// An upstream that cannot sign (step-ca down) delays only that kind's
	// rotation: the other kind still rotates, and the active key signs on.
	var failed []error
	for _, kind := range []KeyKind{X509, JWT} {
		nb, na, ok := activeLife(before, kind)
		_, hasPrepared := preparedIndex(doc, kind)
		switch {
		case !ok || !now.Before(na):
			// No usable active key (first start, or the CA was down past
			// its expiry): make one and use it at once.
			if err := c.prepareInto(ctx, &doc, kind, now); err != nil {
				failed = append(failed, err)
				continue
			}
			activateInto(&doc, kind, now)
			changed = true
		case hasPrepared && ActivateDue(now, nb, na) && !(kind == X509 && rootPublishing(doc)):
			// A root rotation's published key waits for the rotation
			// (rootrot.go): it activates the key with the new root.
			c.warnIfUnpublished(before, kind, now, "scheduled")
			activateInto(&doc, kind, now)
			changed = true
		case !hasPrepared && PrepareDue(now, nb, na):
			if err := c.prepareInto(ctx, &doc, kind, now); err != nil {
				failed = append(failed, err)
				continue
			}
			changed = true
		}
	}
	if dropExpired(&doc, before, now) {
		changed = true
	}
	if !changed {
		return errors.Join(failed...)
	}
	if err := c.commit(ctx, doc); err != nil {
		return err
	}
	c.logChanges(ctx, before, c.cur.Load())
	return errors.Join(append(failed, c.publishBundle(ctx))...)
}

func activeLife(st *state, kind KeyKind) (nb, na time.Time, ok bool) {
	if st == nil {
		return
	}
	if kind == X509 && st.activeX509 != nil {
		return st.activeX509.cert.NotBefore.Add(backdate), st.activeX509.cert.NotAfter, true
	}
	if kind == JWT && st.activeJWT != nil {
		return st.activeJWT.rec.NotBefore, st.activeJWT.rec.NotAfter, true
	}
	return
}

func preparedIndex(doc journalDoc, kind KeyKind) (int, bool) {
	if kind == X509 {
		i := slices.IndexFunc(doc.X509, func(r x509Record) bool { return r.State == Prepared })
		return i, i >= 0
	}
	i := slices.IndexFunc(doc.JWT, func(r jwtRecord) bool { return r.State == Prepared })
	return i, i >= 0
}

// prepareInto makes a new key of kind and adds it as prepared, replacing
// any prepared one. An X.509 key is signed by the upstream's active root.
func (c *CA) prepareInto(ctx context.Context, doc *journalDoc, kind KeyKind, now time.Time) error {
	return c.prepareUnder(ctx, doc, kind, now, nil)
}

// prepareUnder is prepareInto with the root an X.509 key is signed under
// (nil: the upstream's active one).
func (c *CA) prepareUnder(ctx context.Context, doc *journalDoc, kind KeyKind, now time.Time, root *x509.Certificate) error {
	name := keyName(kind, doc.NextSeq)
	doc.NextSeq++
	signer, err := c.cfg.Keys.GenerateKey(ctx, name, c.cfg.KeyType)
	if err != nil {
		return fmt.Errorf("prepare %s key: %w", kind, err)
	}
	if kind == X509 {
		serial, err := randomSerial()
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{Organization: []string{"Sigil"}, CommonName: "Sigil CA " + c.cfg.TrustDomain.Name()},
			URIs:                  []*neturl.URL{c.cfg.TrustDomain.ID().URL()},
			NotBefore:             now.Add(-backdate),
			NotAfter:              now.Add(c.cfg.CATTL),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			PermittedURIDomains:   []string{c.cfg.TrustDomain.Name()},
		}
		chain, err := c.signCAUnder(ctx, root, tmpl, signer)
		if err != nil {
			return fmt.Errorf("prepare x509 key: upstream: %w", err)
		}
		if len(chain) == 0 {
			return errors.New("prepare x509 key: upstream returned no certificate")
		}
		der := make([][]byte, len(chain))
		for i, cert := range chain {
			der[i] = cert.Raw
		}
		doc.X509 = slices.DeleteFunc(doc.X509, func(r x509Record) bool { return r.State == Prepared })
		doc.X509 = append(doc.X509, x509Record{ID: keyIDForCert(chain[0]), KeyName: name, Chain: der, State: Prepared})
		return nil
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return fmt.Errorf("prepare jwt key: %w", err)
	}
	kid, err := randomKeyID()
	if err != nil {
		return err
	}
	kid = c.kidTag + kid
	doc.JWT = slices.DeleteFunc(doc.JWT, func(r jwtRecord) bool { return r.State == Prepared })
	nb := now.Truncate(time.Second) // JWT times are whole seconds
	doc.JWT = append(doc.JWT, jwtRecord{ID: kid, KeyName: name, PublicKey: pub, NotBefore: nb, NotAfter: nb.Add(c.cfg.CATTL), State: Prepared})
	return nil
}

// activateInto makes the prepared key of kind active and the active one old.
func activateInto(doc *journalDoc, kind KeyKind, now time.Time) {
	if kind == X509 {
		for i := range doc.X509 {
			switch doc.X509[i].State {
			case Active:
				doc.X509[i].State = Old
			case Prepared:
				doc.X509[i].State = Active
				doc.X509[i].ActivatedAt = now
			}
		}
		return
	}
	for i := range doc.JWT {
		switch doc.JWT[i].State {
		case Active:
			doc.JWT[i].State = Old
		case Prepared:
			doc.JWT[i].State = Active
		}
	}
}

// dropExpired removes old keys that can no longer verify anything.
func dropExpired(doc *journalDoc, st *state, now time.Time) bool {
	expired := map[string]bool{}
	for _, s := range st.x509 {
		if s.rec.State == Old && !now.Before(s.cert.NotAfter) {
			expired[s.rec.ID] = true
		}
	}
	for _, s := range st.jwt {
		if s.rec.State == Old && !now.Before(s.rec.NotAfter) {
			expired[s.rec.ID] = true
		}
	}
	if len(expired) == 0 {
		return false
	}
	doc.X509 = slices.DeleteFunc(doc.X509, func(r x509Record) bool { return r.State == Old && expired[r.ID] })
	doc.JWT = slices.DeleteFunc(doc.JWT, func(r jwtRecord) bool { return r.State == Old && expired[r.ID] })
	return true
}

// logChanges logs and audits every key whose state changed.
func (c *CA) logChanges(ctx context.Context, before, after *state) {
	was := map[string]KeyState{}
	for _, ks := range before.statuses() {
		was[ks.ID] = ks.State
	}
	now := map[string]bool{}
	for _, ks := range after.statuses() {
		now[ks.ID] = true
		if prev, ok := was[ks.ID]; ok && prev == ks.State {
			continue
		}
		action := "ca.prepare"
		if ks.State == Active {
			action = "ca.activate"
		} else if ks.State == Old {
			action = "ca.retire"
		}
		c.cfg.Logger.Info("ca key changed", "kind", string(ks.Kind), "key_id", ks.ID, "state", string(ks.State), "not_after", ks.NotAfter)
		c.metrics.rotation(ks.Kind, ks.State)
		c.audit(ctx, action, ks.ID, fmt.Sprintf(`{"kind":%q,"not_after":%q}`, ks.Kind, ks.NotAfter.UTC().Format(time.RFC3339)))
	}
	for id := range was {
		if !now[id] {
			c.cfg.Logger.Info("ca key dropped", "key_id", id)
			c.audit(ctx, "ca.drop", id, "{}")
		}
	}
}

func (st *state) statuses() []KeyStatus {
	var out []KeyStatus
	for _, s := range st.x509 {
		out = append(out, s.status())
	}
	for _, s := range st.jwt {
		out = append(out, s.status())
	}
	return out
}

// Status reports every key of the journal.
func (c *CA) Status(ctx context.Context) (Status, error) {
	st := c.cur.Load()
	if st == nil {
		return Status{}, ErrNotReady
	}
	roots, err := c.Roots(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("ca status: upstream roots: %w", err)
	}
	return Status{TrustDomain: c.cfg.TrustDomain.Name(), Keys: st.statuses(), UpstreamRoots: roots, Upstream: c.upstreamStatus(),
		Rekey: st.doc.Rekey.status(), LastRekey: st.doc.LastRekey.status(), Roots: c.rootStatuses(ctx, st)}, nil
}

// Prepare makes and publishes a new key of kind now, whatever the schedule.
func (c *CA) Prepare(ctx context.Context, kind KeyKind) (KeyStatus, error) {
	if err := kind.validate(); err != nil {
		return KeyStatus{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	doc := before.doc.clone()
	if err := c.prepareInto(ctx, &doc, kind, c.cfg.Now()); err != nil {
		return KeyStatus{}, err
	}
	return c.finishForced(ctx, before, doc, kind, Prepared)
}

// Activate switches signing to the prepared key of kind now.
func (c *CA) Activate(ctx context.Context, kind KeyKind) (KeyStatus, error) {
	if err := kind.validate(); err != nil {
		return KeyStatus{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.cur.Load()
	doc := before.doc.clone()
	if _, ok := preparedIndex(doc, kind); !ok {
		return KeyStatus{}, ErrNoPrepared
	}
	c.warnIfUnpublished(before, kind, c.cfg.Now(), "forced")
	activateInto(&doc, kind, c.cfg.Now())
	ks, err := c.finishForced(ctx, before, doc, kind, Active)
	if err != nil {
		return KeyStatus{}, err
	}
	return ks, c.refreshServerSVID(ctx, kind == X509)
}

// warnIfUnpublished warns when the prepared key of kind about to be
// activated has been in the bundle for less than the publish wait (the
// refresh hint, at least the re-key's wait): verifiers that fetch the
// bundle by the hint may refuse what it signs until they fetch again.
// Activation goes ahead, as SPIRE's `localauthority x509 activate` does:
// operators force it on purpose, and a scheduled activation that comes
// early (the CA was down past the prepare time) must not wait while the
// active key runs out. Agents are not stranded by it: they verify the
// CA's certificate by their bootstrap roots when their bundle lacks the
// key (agent/catrust.go).
func (c *CA) warnIfUnpublished(st *state, kind KeyKind, now time.Time, trigger string) {
	var id string
	var published time.Time
	for _, ks := range st.statuses() {
		if ks.Kind == kind && ks.State == Prepared {
			id, published = ks.ID, ks.NotBefore
		}
	}
	if id == "" {
		return
	}
	if kind == X509 {
		published = published.Add(backdate) // prepareUnder backdates the certificate
	}
	wait := c.rootPublishWait()
	if in := now.Sub(published); in < wait {
		c.cfg.Logger.Warn("activating a ca key published for less than the publish wait: verifiers that have not fetched the bundle since may refuse what it signs until they do",
			"kind", string(kind), "key_id", id, "trigger", trigger, "published_for", in.Round(time.Millisecond), "publish_wait", wait)
	}
}

func (c *CA) finishForced(ctx context.Context, before *state, doc journalDoc, kind KeyKind, want KeyState) (KeyStatus, error) {
	if err := c.commit(ctx, doc); err != nil {
		return KeyStatus{}, err
	}
	after := c.cur.Load()
	c.logChanges(ctx, before, after)
	if err := c.publishBundle(ctx); err != nil {
		return KeyStatus{}, err
	}
	for _, ks := range after.statuses() {
		if ks.Kind == kind && ks.State == want {
			return ks, nil
		}
	}
	return KeyStatus{}, fmt.Errorf("%s key in state %s vanished", kind, want)
}

// Taint marks a non-active key as compromised: agents re-issue every SVID it
// signed at once.
func (c *CA) Taint(ctx context.Context, kind KeyKind, keyID string) error {
	return c.edit(ctx, kind, keyID, "ca.taint", func(doc *journalDoc, i int) error {
		if kind == X509 {
			if doc.X509[i].State == Active {
				return ErrKeyActive
			}
			doc.X509[i].Tainted = true
			return nil
		}
		if doc.JWT[i].State == Active {
			return ErrKeyActive
		}
		doc.JWT[i].Tainted = true
		return nil
	})
}

// Revoke removes a tainted, non-active key: it leaves the bundle (so every
// verifier fed from it refuses what the key signed), its X.509 key ID joins
// the revoked list that agents receive, and its private key is destroyed in
// the key manager. The journal is saved before the key is destroyed, so a
// crash in between leaves a key nothing trusts or loads; the error then
// says the key is still to be deleted.
func (c *CA) Revoke(ctx context.Context, kind KeyKind, keyID string) error {
	var keyName string
	err := c.edit(ctx, kind, keyID, "ca.revoke", func(doc *journalDoc, i int) error {
		if kind == X509 {
			if !doc.X509[i].Tainted {
				return ErrNotTainted
			}
			keyName = doc.X509[i].KeyName
			doc.RevokedX509 = append(doc.RevokedX509, doc.X509[i].ID)
			doc.X509 = slices.Delete(doc.X509, i, i+1)
			return nil
		}
		if !doc.JWT[i].Tainted {
			return ErrNotTainted
		}
		keyName = doc.JWT[i].KeyName
		doc.JWT = slices.Delete(doc.JWT, i, i+1)
		return nil
	})
	if err != nil {
		return err
	}
	return c.destroyKey(ctx, keyID, keyName)
}

// destroyKey deletes a revoked key from the key manager (file, PKCS#11
// object or memory), so that nobody holding the CA's key store can sign
// with it again.
func (c *CA) destroyKey(ctx context.Context, keyID, name string) error {
	d, ok := c.cfg.Keys.(keys.Deleter)
	if !ok {
		return fmt.Errorf("key %s revoked, but the key manager cannot delete key %q: destroy it by hand", keyID, name)
	}
	if err := d.DeleteKey(ctx, name); err != nil && !errors.Is(err, keys.ErrNotFound) {
		c.cfg.Logger.Error("destroy revoked ca key", "key_id", keyID, "key_name", name, "error", err)
		return fmt.Errorf("key %s revoked, but deleting key %q failed (destroy it by hand): %w", keyID, name, err)
	}
	c.cfg.Logger.Warn("revoked ca key destroyed", "key_id", keyID, "key_name", name)
	c.audit(ctx, "ca.destroy", keyID, fmt.Sprintf(`{"key_name":%q}`, name))
	return nil
}

func (c *CA) edit(ctx context.Context, kind KeyKind, keyID, action string, fn func(doc *journalDoc, i int) error) error {
	if err := kind.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	doc := c.cur.Load().doc.clone()
	i := -1
	if kind == X509 {
		i = slices.IndexFunc(doc.X509, func(r x509Record) bool { return r.ID == keyID })
	} else {
		i = slices.IndexFunc(doc.JWT, func(r jwtRecord) bool { return r.ID == keyID })
	}
	if i < 0 {
		return fmt.Errorf("%w: %s key %q", ErrKeyNotFound, kind, keyID)
	}
	if err := fn(&doc, i); err != nil {
		return err
	}
	if err := c.commit(ctx, doc); err != nil {
		return err
	}
	c.cfg.Logger.Warn("ca key "+action[len("ca."):]+"ed", "kind", string(kind), "key_id", keyID)
	c.audit(ctx, action, keyID, fmt.Sprintf(`{"kind":%q}`, kind))
	return c.publishBundle(ctx)
}

func (k KeyKind) validate() error {
	if k != X509 && k != JWT {
		return fmt.Errorf("unknown key kind %q: want x509 or jwt", string(k))
	}
	return nil
}

// TaintedX509 lists the IDs of tainted X.509 CA keys still in the journal,
// and RevokedX509 those revoked: agents re-issue SVIDs they signed.
func (c *CA) TaintedX509() (tainted, revoked []string) {
	st := c.cur.Load()
	if st == nil {
		return nil, nil
	}
	for _, s := range st.x509 {
		if s.rec.Tainted {
			tainted = append(tainted, s.rec.ID)
		}
	}
	return tainted, append([]string(nil), st.doc.RevokedX509...)
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func randomKeyID() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
