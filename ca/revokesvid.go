package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/sigilhq/sigil/ca/store"
)

// Bounds of leaf revocation.
const (
	// MaxRevokedSVIDs bounds the unexpired revoked SVIDs the store keeps;
	// one more is refused with store.ErrLimit (revoke the issuing key
	// instead).
	MaxRevokedSVIDs = 10000
	// MaxRevokedIDs bounds the unexpired SPIFFE ID revocations the store
	// keeps.
	MaxRevokedIDs = 1000
	// CRLLife is a CRL's nextUpdate after its thisUpdate. A verifier that
	// checks CRLs refuses every SVID of the issuer once its CRL is past
	// nextUpdate, so it is no shorter than an SVID's default life; CRLs are
	// re-signed at half their life and at once on any change.
	CRLLife = time.Hour
	// RevocationPoll is how often Run reads revocations other replicas
	// recorded in the shared store.
	RevocationPoll = time.Second
)

// revocations is the CA's view of the revoked SVIDs and the CRLs it signs
// for them.
type revocations struct {
	serials    map[string]bool      // lowercase hex
	ids        map[string]time.Time // SPIFFE ID → SVIDs issued before this are revoked
	key        string               // serials and signing key IDs, to see a change
	thisUpdate time.Time
	own        [][]byte  // DER, one per unexpired signing key of this replica
	stored     bool      // own is in the shared store
	crls       [][]byte  // own, then the other replicas' (see peerCRLs)
	latest     time.Time // the latest RevokedAt: what a re-key must cover
}

// RevokeSVID revokes one X.509-SVID by serial number (lowercase or
// uppercase hex). The serial is recorded in the store shared by every
// replica until notAfter, which is the latest expiry of the bundle's
// authorities: no SVID of this trust domain lives longer than its issuer,
// so the record outlives the SVID whoever issued it. spiffeID is only
// recorded. Every replica's CA mTLS refuses the serial within
// RevocationPoll, and this replica's CRLs list it at once; the others'
// CRLs list it within RevocationPoll and reach every replica's agents
// within another.
func (c *CA) RevokeSVID(ctx context.Context, actor, serial, spiffeID string) error {
	n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(serial), "0x"), 16)
	if !ok || n.Sign() <= 0 {
		return fmt.Errorf("revoke svid: %w: serial %q is not a positive hex number", store.ErrInvalid, serial)
	}
	now := c.cfg.Now()
	notAfter := c.lastAuthorityExpiry()
	if notAfter.IsZero() {
		return ErrNotReady
	}
	r := store.RevokedSVID{Serial: n.Text(16), SPIFFEID: spiffeID, NotAfter: notAfter}
	if err := c.cfg.Store.RevokeSVID(ctx, actor, r, now, MaxRevokedSVIDs); err != nil {
		return err
	}
	c.cfg.Logger.Warn("svid revoked", "serial", r.Serial, "spiffe_id", spiffeID, "actor", actor)
	if err := c.refreshRevocations(ctx); err != nil {
		return err
	}
	c.kickRekey()
	return nil
}

// RevokeSPIFFEID revokes every X.509-SVID of a SPIFFE ID issued before now
// (the store's clock). The CA keeps no record of what it signed, so no CRL
// can list them; every replica's CA mTLS refuses them (notBefore plus the
// backdate before the revocation time) within RevocationPoll, and the
// re-key takes their issuing keys out of the bundle for every other
// verifier. The ID's entries keep minting new SVIDs unless deleted.
func (c *CA) RevokeSPIFFEID(ctx context.Context, actor, spiffeID string) error {
	notAfter := c.lastAuthorityExpiry()
	if notAfter.IsZero() {
		return ErrNotReady
	}
	r := store.RevokedID{SPIFFEID: spiffeID, NotAfter: notAfter}
	if err := c.cfg.Store.RevokeSPIFFEID(ctx, actor, r, c.cfg.Now(), MaxRevokedIDs); err != nil {
		return err
	}
	c.cfg.Logger.Warn("svids of a spiffe id revoked", "spiffe_id", spiffeID, "actor", actor)
	if err := c.refreshRevocations(ctx); err != nil {
		return err
	}
	c.kickRekey()
	return nil
}

// lastAuthorityExpiry is the latest notAfter of the published bundle's
// authorities: no SVID of this trust domain outlives it.
func (c *CA) lastAuthorityExpiry() time.Time {
	var notAfter time.Time
	if p := c.authorities.Load(); p != nil {
		for _, a := range *p {
			if a.NotAfter.After(notAfter) {
				notAfter = a.NotAfter
			}
		}
	}
	return notAfter
}

// LeafRevoked reports whether a client X.509-SVID was revoked, by serial
// or by SPIFFE ID (issued before the ID's revocation).
func (c *CA) LeafRevoked(leaf *x509.Certificate) bool {
	r := c.revoked.Load()
	if r == nil {
		return false
	}
	if r.serials[leaf.SerialNumber.Text(16)] {
		return true
	}
	for _, u := range leaf.URIs {
		if t, ok := r.ids[u.String()]; ok && leaf.NotBefore.Add(backdate).Before(t) {
			return true
		}
	}
	return false
}

// SVIDRevoked reports whether the serial of an X.509-SVID was revoked.
func (c *CA) SVIDRevoked(serial *big.Int) bool {
	r := c.revoked.Load()
	return r != nil && r.serials[serial.Text(16)]
}

// CRLs returns one DER X.509 CRL per unexpired signing key of this
// replica, each signed by that key and listing every revoked serial,
// followed by the other replicas' CRLs of the keys in the bundle (see
// peerCRLs). Serials are random 128-bit numbers, so listing another key's
// serial in a CRL revokes nothing else.
func (c *CA) CRLs() [][]byte {
	r := c.revoked.Load()
	if r == nil {
		return nil
	}
	return r.crls
}

// refreshRevocations re-reads the revoked serials and re-signs the CRLs when
// they, or this replica's signing keys, changed, or at half a CRL's life.
// Expired revocations are pruned by the store's readers' time filter and
// deleted on the rotation tick.
func (c *CA) refreshRevocations(ctx context.Context) error {
	c.revMu.Lock()
	defer c.revMu.Unlock()
	now := c.cfg.Now()
	list, err := c.cfg.Store.ListRevokedSVIDs(ctx, now)
	if err != nil {
		return fmt.Errorf("refresh revocations: %w", err)
	}
	ids, err := c.cfg.Store.ListRevokedIDs(ctx, now)
	if err != nil {
		return fmt.Errorf("refresh revocations: %w", err)
	}
	st := c.cur.Load()
	if st == nil {
		return ErrNotReady
	}
	var slots []*x509Slot
	var b strings.Builder
	for _, r := range list {
		b.WriteString(r.Serial)
		b.WriteByte(',')
	}
	b.WriteByte('|')
	for _, r := range ids {
		fmt.Fprintf(&b, "%s@%d,", r.SPIFFEID, r.RevokedAt.UnixMicro())
	}
	b.WriteByte('|')
	for _, s := range st.x509 {
		if now.Before(s.cert.NotAfter) {
			slots = append(slots, s)
			b.WriteString(s.rec.ID)
			b.WriteByte(',')
		}
	}
	old := c.revoked.Load()
	if old != nil && old.key == b.String() && now.Before(old.thisUpdate.Add(CRLLife/2)) {
		return c.mergeCRLs(ctx, old, slots, now)
	}
	next := &revocations{serials: make(map[string]bool, len(list)), ids: make(map[string]time.Time, len(ids)), key: b.String(), thisUpdate: now}
	for _, r := range ids {
		next.ids[r.SPIFFEID] = r.RevokedAt
		if r.RevokedAt.After(next.latest) {
			next.latest = r.RevokedAt
		}
	}
	entries := make([]x509.RevocationListEntry, 0, len(list))
	for _, r := range list {
		next.serials[r.Serial] = true
		if r.RevokedAt.After(next.latest) {
			next.latest = r.RevokedAt
		}
		n, _ := new(big.Int).SetString(r.Serial, 16)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt})
	}
	for _, s := range slots {
		tmpl := &x509.RevocationList{
			// Increasing across re-signs and restarts.
			Number:                    big.NewInt(now.UnixMicro()),
			ThisUpdate:                now.Add(-backdate),
			NextUpdate:                now.Add(CRLLife),
			RevokedCertificateEntries: entries,
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, s.cert, s.signer)
		if err != nil {
			return fmt.Errorf("sign crl for key %s: %w", s.rec.ID, err)
		}
		next.own = append(next.own, der)
	}
	next.stored = c.putCRLs(ctx, slots, next.own, now, now)
	next.crls = append(slices.Clip(next.own), c.peerCRLs(ctx, now)...)
	c.revoked.Store(next)
	if old == nil || !slices.Equal(keysOf(old.serials), keysOf(next.serials)) || len(old.ids) != len(next.ids) {
		c.cfg.Logger.Info("revoked svids loaded", "count", len(list), "spiffe_ids", len(ids), "crls", len(next.crls))
	}
	return nil
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
