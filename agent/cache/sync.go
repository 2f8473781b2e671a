package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/bundleconv"
)

// runSync keeps a Sync stream open, reopening it with capped exponential
// backoff; a stream that delivered something resets the backoff.
func (c *Cache) runSync(ctx context.Context) {
	attempt := 0
	for {
		progressed, err := c.syncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			attempt = 0
		}
		c.cfg.Metrics.reconnects.Inc()
		if code := status.Code(err); code == codes.PermissionDenied || code == codes.Unauthenticated {
			c.cfg.Logger.Warn("the CA refused the agent's sync stream", "error", err)
		} else {
			c.cfg.Logger.Warn("sync stream to the CA ended; serving cached SVIDs", "error", err, "attempt", attempt)
		}
		d := Backoff(attempt, c.cfg.RetryMin, c.cfg.RetryMax, c.cfg.Rand())
		attempt++
		if progressed && status.Code(err) == codes.Canceled {
			// The agent replaced its connection (a renewed agent SVID):
			// a healthy stream, reopened at once on the new one.
			continue
		}
		t := c.cfg.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-c.redial:
			t.Stop()
		}
	}
}

// syncOnce opens one Sync stream from the last applied revision and applies
// what it delivers until it ends.
func (c *Cache) syncOnce(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.cfg.Client.Sync(ctx, &nodev1.SyncRequest{Revision: c.Revision()})
	if err != nil {
		return false, fmt.Errorf("open sync stream: %w", err)
	}
	var parts partial
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, errors.New("sync stream closed by the CA")
		}
		if err != nil {
			return progressed, fmt.Errorf("sync: %w", err)
		}
		resp, err = parts.add(resp)
		if err != nil {
			return progressed, err
		}
		if resp == nil {
			continue // more parts of this response follow
		}
		if err := c.Apply(resp); err != nil {
			// A response we cannot apply must not be half-applied or
			// skipped: start over from our last good revision.
			return progressed, err
		}
		progressed = true
	}
}

// MaxSyncParts bounds how many parts of one split SyncResponse the agent
// holds before applying them (a part carries up to 1,000 entries).
const MaxSyncParts = 4096

// partial gathers the parts of a split SyncResponse (all but the last have
// more set), so that they are applied together: the agent never serves a
// half-applied set.
type partial struct {
	resp  *nodev1.SyncResponse // the parts so far, merged; nil between responses
	parts int
}

// add takes the next message of the stream and returns the complete
// response it ends, or nil when more parts follow.
func (p *partial) add(r *nodev1.SyncResponse) (*nodev1.SyncResponse, error) {
	if p.resp == nil {
		if !r.GetMore() {
			return r, nil
		}
		p.resp, p.parts = r, 1
		return nil, nil
	}
	if r.GetRevision() != p.resp.GetRevision() {
		return nil, fmt.Errorf("sync: part %d of a response for revision %d is for revision %d", p.parts+1, p.resp.GetRevision(), r.GetRevision())
	}
	if r.GetFull() || len(r.GetTaintedX509KeyIds()) > 0 || len(r.GetRevokedX509KeyIds()) > 0 ||
		r.GetX509CrlsChanged() || len(r.GetX509Crls()) > 0 {
		return nil, fmt.Errorf("sync: part %d of a response sets full, key lists or CRLs, which belong to the first part", p.parts+1)
	}
	p.parts++
	if p.parts > MaxSyncParts {
		return nil, fmt.Errorf("sync: a response in more than %d parts", MaxSyncParts)
	}
	m := p.resp
	m.Entries = append(m.Entries, r.GetEntries()...)
	m.DeletedEntryIds = append(m.DeletedEntryIds, r.GetDeletedEntryIds()...)
	m.Bundles = append(m.Bundles, r.GetBundles()...)
	if r.GetMore() {
		return nil, nil
	}
	m.More = false
	p.resp, p.parts = nil, 0
	return m, nil
}

// MaxCRLs bounds the CRLs one sync response may carry (the CA sends one
// per signing key: a handful).
const MaxCRLs = 64

// Apply applies one SyncResponse: entries created, updated or deleted (or
// the whole set replaced), bundles, CRLs, and tainted or revoked CA keys. Either
// all of it applies or none does. Subscribers that can see a difference get
// a new Update. A part of a split response (more set) is refused: the
// parts are applied together, merged.
func (c *Cache) Apply(resp *nodev1.SyncResponse) error {
	if resp.GetMore() {
		return errors.New("sync: a part of a split response cannot be applied alone")
	}
	parsed := make(map[string]*entry, len(resp.GetEntries()))
	for _, pb := range resp.GetEntries() {
		e := &entry{}
		if err := e.parse(pb, c.cfg.TrustDomain); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		parsed[e.ID] = e
	}
	var bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
	if len(resp.GetBundles()) > 0 {
		bundles = make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(resp.GetBundles()))
		for _, pb := range resp.GetBundles() {
			b, err := bundleconv.FromProto(pb)
			if err != nil {
				return err
			}
			bundles[b.TrustDomain()] = b
		}
		if _, ok := bundles[c.cfg.TrustDomain]; !ok {
			return fmt.Errorf("sync: bundles without our trust domain %s", c.cfg.TrustDomain)
		}
	}

	if n := len(resp.GetX509Crls()); n > MaxCRLs {
		return fmt.Errorf("sync: %d CRLs, more than %d", n, MaxCRLs)
	}
	for i, der := range resp.GetX509Crls() {
		if _, err := x509.ParseRevocationList(der); err != nil {
			return fmt.Errorf("sync: CRL %d: %w", i, err)
		}
	}

	var badKeys map[string]bool
	var revokedKeys []string
	defer func() {
		// Deferred before the unlock below, so it runs after it.
		if badKeys != nil && c.cfg.OnBadKeys != nil {
			c.cfg.OnBadKeys(badKeys)
		}
		if len(revokedKeys) > 0 && c.cfg.OnRevokedKeys != nil {
			c.cfg.OnRevokedKeys(revokedKeys)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	var ch changes
	if resp.GetFull() {
		for id, old := range c.entries {
			if _, keep := parsed[id]; !keep {
				c.drop(id, old)
				ch.add(old)
			}
		}
	}
	for _, id := range resp.GetDeletedEntryIds() {
		if old, ok := c.entries[id]; ok {
			c.drop(id, old)
			ch.add(old)
		}
	}
	needMint := false
	for id, e := range parsed {
		old, ok := c.entries[id]
		if !ok {
			c.entries[id] = e
			ch.add(e)
			needMint = true
			continue
		}
		if sameEntry(&old.Entry, &e.Entry) {
			continue
		}
		ch.add(old)
		ch.add(e)
		e.gen = old.gen + 1
		if old.SPIFFEID != e.SPIFFEID && old.svid != nil {
			c.nsvids-- // an SVID for the old ID is no SVID for this entry
		}
		if old.SPIFFEID == e.SPIFFEID {
			e.svid, e.caKey, e.jitter, e.rotateAt = old.svid, old.caKey, old.jitter, old.rotateAt
			e.validFrom, e.validUntil, e.usable = old.validFrom, old.validUntil, old.usable
			if !slices.Equal(old.DNSNames, e.DNSNames) || old.X509TTL != e.X509TTL {
				e.stale = true
			}
		}
		if e.svid == nil || e.stale {
			needMint = true
		}
		c.entries[id] = e
	}
	if bundles != nil {
		if !sameBundles(c.bundles, bundles) {
			ch.all = true
			// An SVID whose issuer the new bundle no longer trusts
			// (e.g. restored from disk, issued under a key since
			// dropped) is of no use to anyone: mint a new one.
			if c.dropUntrusted(bundles[c.cfg.TrustDomain]) {
				needMint = true
			}
		}
		c.bundles = bundles
	}
	if resp.GetX509CrlsChanged() {
		ch.all = ch.all || !slices.EqualFunc(c.crls, resp.GetX509Crls(), bytes.Equal)
		c.crls = resp.GetX509Crls()
	}
	if resp.GetFull() || len(resp.GetTaintedX509KeyIds()) > 0 || len(resp.GetRevokedX509KeyIds()) > 0 {
		bad := map[string]bool{}
		for _, id := range resp.GetTaintedX509KeyIds() {
			bad[id] = true
		}
		for _, id := range resp.GetRevokedX509KeyIds() {
			bad[id] = true
		}
		revoked := map[string]bool{}
		for _, id := range resp.GetRevokedX509KeyIds() {
			revoked[id] = true
		}
		for _, e := range c.entries {
			if e.svid == nil {
				continue
			}
			if revoked[e.caKeyID()] {
				// Nobody trusts a revoked key's SVIDs: stop handing them out.
				e.svid = nil
				c.nsvids--
				ch.add(e)
			}
			if bad[e.caKeyID()] {
				needMint = true
			}
		}
		c.bad = bad
		badKeys = maps.Clone(bad)
		revokedKeys = slices.Clone(resp.GetRevokedX509KeyIds())
	}
	if resp.GetRevision() > c.revision || resp.GetFull() {
		c.revision = resp.GetRevision()
	}
	c.synced = true
	c.noteChurn(len(ch.entries), c.cfg.Clock.Now())
	c.cfg.Metrics.svids.Set(float64(c.nsvids))
	c.notifyLocked(ch)
	if needMint || c.churn >= c.cfg.ReleaseAfter {
		c.poke() // the minting loop also returns freed memory
	}
	return nil
}

func sameBundles(a, b map[spiffeid.TrustDomain]*spiffebundle.Bundle) bool {
	if len(a) != len(b) {
		return false
	}
	for td, x := range a {
		y, ok := b[td]
		if !ok || !x.Equal(y) {
			return false
		}
	}
	return true
}

func (c *Cache) drop(id string, e *entry) {
	delete(c.entries, id)
	if e.svid != nil {
		c.nsvids--
	}
}

// dropUntrusted drops every SVID that does not chain to bundle and reports
// whether it dropped any. Callers hold c.mu.
func (c *Cache) dropUntrusted(bundle *spiffebundle.Bundle) bool {
	trusted := map[string]bool{}
	for _, a := range bundle.X509Authorities() {
		sum := sha256.Sum256(a.RawSubjectPublicKeyInfo)
		trusted[hex.EncodeToString(sum[:])] = true
	}
	dropped := false
	for id, e := range c.entries {
		if e.svid == nil || trusted[e.caKeyID()] {
			continue
		}
		if svid := e.svid.mustSVID(c.cfg.Logger.Error, e.SPIFFEID); svid != nil {
			if _, err := issuerKeyID(svid, bundle); err == nil {
				continue
			}
		}
		c.cfg.Logger.Warn("dropping an X509-SVID: the new bundle does not trust its issuer", "entry_id", id, "spiffe_id", e.SPIFFEID.String())
		e.svid = nil
		c.nsvids--
		dropped = true
	}
	return dropped
}
