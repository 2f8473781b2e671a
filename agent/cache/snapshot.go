package cache

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"unique"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Snapshot is what the cache holds that lets an agent serve its workloads
// after a restart before it reaches the CA: the entries, the bundles and
// the X509-SVIDs by entry ID.
type Snapshot struct {
	Entries []*Entry
	Bundles []*spiffebundle.Bundle
	SVIDs   map[string]*x509svid.SVID
	// Raw holds SVIDs by entry ID as the cache keeps them, unparsed:
	// Snapshot fills Raw rather than SVIDs (parsing every SVID to have it
	// written out again would cost what the cache saves by not keeping
	// them parsed), except for a key without a PKCS#8 form. An entry ID
	// is in at most one of the two.
	Raw map[string]RawSVID
}

// RawSVID is an X509-SVID as DER certificates, leaf first, and its
// private key as PKCS#8. The slices are shared: never modify them.
type RawSVID struct {
	Chain [][]byte
	Key   []byte
}

// raw is h as a RawSVID, or false when its key has no PKCS#8 form.
func (h *held) raw() (RawSVID, bool) {
	if h.key == nil {
		return RawSVID{}, false
	}
	chain := make([][]byte, 0, 1+len(h.chain))
	chain = append(chain, h.leaf)
	for _, c := range h.chain {
		chain = append(chain, c.Raw)
	}
	return RawSVID{Chain: chain, Key: h.key}, true
}

// Version counts the changes subscribers were told about: a snapshot taken
// at an unchanged version holds nothing new.
func (c *Cache) Version() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// Snapshot lists the cache's entries, bundles and SVIDs in a stable order.
// All are shared, not copied (the cache replaces them, never modifies
// them in place): callers must not modify them. SVIDs come in Raw (see
// Snapshot).
func (c *Cache) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Snapshot{Entries: make([]*Entry, 0, len(c.entries)), SVIDs: map[string]*x509svid.SVID{}, Raw: make(map[string]RawSVID, c.nsvids)}
	for _, id := range sortedIDs(c.entries) {
		e := c.entries[id]
		s.Entries = append(s.Entries, &e.Entry)
		if e.svid != nil {
			if raw, ok := e.svid.raw(); ok {
				s.Raw[id] = raw
			} else if svid := e.svid.mustSVID(c.cfg.Logger.Error, e.SPIFFEID); svid != nil {
				s.SVIDs[id] = svid
			}
		}
	}
	for _, td := range slices.SortedFunc(maps.Keys(c.bundles), func(a, b spiffeid.TrustDomain) int { return cmpString(a.Name(), b.Name()) }) {
		s.Bundles = append(s.Bundles, c.bundles[td])
	}
	return s
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Restore loads a snapshot into an empty cache before Run: entries and
// bundles as they were, and each SVID that is for its entry's SPIFFE ID
// and chains to the snapshot's bundle of our trust domain. An SVID that
// has expired is dropped; the validity rules withhold a not-yet-valid one
// as always. The next sync from the CA replaces the whole set (it starts
// from revision 0), so whatever the CA changed meanwhile applies. It
// returns how many SVIDs it kept and dropped.
func (c *Cache) Restore(s Snapshot) (kept, dropped int, err error) {
	parsed := make(map[string]*entry, len(s.Entries))
	for _, e := range s.Entries {
		switch {
		case e == nil || e.ID == "":
			return 0, 0, errors.New("restore: an entry without an id")
		case !e.SPIFFEID.MemberOf(c.cfg.TrustDomain):
			return 0, 0, fmt.Errorf("restore: entry %s: %q is not in trust domain %s", e.ID, e.SPIFFEID, c.cfg.TrustDomain)
		}
		parsed[e.ID] = &entry{Entry: *e}
	}
	bundles := map[spiffeid.TrustDomain]*spiffebundle.Bundle{}
	for _, b := range s.Bundles {
		bundles[b.TrustDomain()] = b
	}
	own, ok := bundles[c.cfg.TrustDomain]
	if !ok {
		return 0, 0, fmt.Errorf("restore: no bundle of our trust domain %s", c.cfg.TrustDomain)
	}
	now := c.cfg.Clock.Now()
	cas := map[string]*x509.Certificate{}
	svids := maps.Clone(s.SVIDs)
	if svids == nil {
		svids = map[string]*x509svid.SVID{}
	}
	for id, raw := range s.Raw {
		svid, err := x509svid.ParseRaw(bytes.Join(raw.Chain, nil), raw.Key)
		if err != nil {
			c.cfg.Logger.Warn("dropping a persisted X509-SVID that does not parse", "entry_id", id, "error", err)
			dropped++
			continue
		}
		svids[id] = svid
	}
	for id, svid := range svids {
		e, ok := parsed[id]
		if !ok || svid == nil || len(svid.Certificates) == 0 || svid.ID != e.SPIFFEID {
			dropped++
			continue
		}
		keyID, err := issuerKeyID(svid, own)
		if err != nil {
			c.cfg.Logger.Warn("dropping a persisted X509-SVID: the bundle does not trust its issuer", "entry_id", id, "spiffe_id", svid.ID.String(), "error", err)
			dropped++
			continue
		}
		from, until := Validity(svid.Certificates)
		if !now.Before(until) {
			dropped++
			continue
		}
		// The CA certificates of restored chains are one parsed copy
		// each, as for minted ones.
		shared := &x509svid.SVID{ID: svid.ID, Certificates: slices.Clone(svid.Certificates), PrivateKey: svid.PrivateKey}
		for i, cert := range shared.Certificates[1:] {
			if prev, ok := cas[string(cert.Raw)]; ok {
				shared.Certificates[i+1] = prev
			} else {
				cas[string(cert.Raw)] = cert
			}
		}
		h, err := hold(shared)
		if err != nil {
			dropped++
			continue
		}
		e.svid, e.caKey = h, unique.Make(keyID)
		e.jitter = c.cfg.Rand()
		e.rotateAt = RotateAt(svid.Certificates[0].NotBefore, svid.Certificates[0].NotAfter, e.jitter)
		e.validFrom, e.validUntil = from, until
		e.usable = Usable(now, from, until)
		kept++
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > 0 || c.synced {
		return 0, 0, errors.New("restore: the cache is not empty")
	}
	c.entries = parsed
	c.bundles = bundles
	c.nsvids = kept
	c.noteChurn(len(parsed), now) // and what reading the file left behind
	c.revision = 0
	c.cfg.Metrics.svids.Set(float64(c.nsvids))
	c.notifyLocked(changes{all: true})
	c.poke()
	c.pokeExpiry()
	return kept, dropped, nil
}

// issuerKeyID verifies svid against bundle and returns the key ID (SHA-256
// of the public key, hex) of the authority that signed it.
func issuerKeyID(svid *x509svid.SVID, bundle *spiffebundle.Bundle) (string, error) {
	_, chains, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil {
		return "", err
	}
	if len(chains) == 0 || len(chains[0]) < 2 {
		return "", errors.New("no issuer in the verified chain")
	}
	sum := sha256.Sum256(chains[0][1].RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:]), nil
}
