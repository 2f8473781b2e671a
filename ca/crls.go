package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"time"

	"github.com/sigilhq/sigil/ca/store"
)

// putCRLs stores this replica's CRLs for the other replicas to serve. A
// failure is logged, not returned: the replica's own agents have them,
// and the next refresh tries again. It reports success.
func (c *CA) putCRLs(ctx context.Context, slots []*x509Slot, own [][]byte, signed, now time.Time) bool {
	recs := make([]store.SignedCRL, len(own))
	for i, der := range own {
		recs[i] = store.SignedCRL{CAID: c.cfg.InstanceID, KeyID: hex.EncodeToString(slots[i].cert.SubjectKeyId), DER: der, NextUpdate: signed.Add(CRLLife)}
	}
	if err := c.cfg.Store.PutCRLs(ctx, c.cfg.InstanceID, recs, now); err != nil {
		c.cfg.Logger.Error("store crls for the other replicas", "error", err)
		return false
	}
	return true
}

// peerCRLs are the other replicas' stored CRLs that are signed by an
// authority of the bundle this replica last published (so none of a
// revoked or unknown key) and not stale at now. A store error is logged
// and yields none: the agents keep the CRLs they have until their
// nextUpdate.
func (c *CA) peerCRLs(ctx context.Context, now time.Time) [][]byte {
	list, err := c.cfg.Store.ListCRLs(ctx, now)
	if err != nil {
		c.cfg.Logger.Error("read the other replicas' crls", "error", err)
		return nil
	}
	auths := map[string]*x509.Certificate{}
	if p := c.authorities.Load(); p != nil {
		for _, a := range *p {
			auths[hex.EncodeToString(a.SubjectKeyId)] = a
		}
	}
	var out [][]byte
	for _, r := range list {
		if r.CAID == c.cfg.InstanceID {
			continue
		}
		auth, ok := auths[r.KeyID]
		if !ok {
			continue
		}
		crl, err := x509.ParseRevocationList(r.DER)
		if err != nil || crl.CheckSignatureFrom(auth) != nil || !now.Before(crl.NextUpdate) {
			c.cfg.Logger.Warn("ignoring a stored crl that does not verify", "ca_id", r.CAID, "key_id", r.KeyID)
			continue
		}
		if len(out) == store.MaxSignedCRLs {
			c.cfg.Logger.Warn("too many stored crls; serving the first", "max", store.MaxSignedCRLs)
			break
		}
		out = append(out, r.DER)
	}
	return out
}

// mergeCRLs refreshes the other replicas' part of old's CRLs (and retries
// storing this replica's own) without re-signing.
func (c *CA) mergeCRLs(ctx context.Context, old *revocations, slots []*x509Slot, now time.Time) error {
	stored := old.stored || c.putCRLs(ctx, slots, old.own, old.thisUpdate, now)
	all := append(slices.Clip(old.own), c.peerCRLs(ctx, now)...)
	if stored == old.stored && slices.EqualFunc(all, old.crls, bytes.Equal) {
		return nil
	}
	next := *old
	next.stored, next.crls = stored, all
	c.revoked.Store(&next)
	return nil
}
