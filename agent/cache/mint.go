package cache

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"time"
	"unique"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
)

// runMint mints what is due, then sleeps until the next SVID is due, new
// entries arrive, or (after a failure) the backoff ends.
func (c *Cache) runMint(ctx context.Context) {
	attempt := 0
	var released time.Time // the last ReleaseMemory call
	for {
		next, err := c.MintDue(ctx)
		if ctx.Err() != nil {
			return
		}
		now := c.cfg.Clock.Now()
		wait := next.Sub(now)
		if err != nil {
			c.cfg.Logger.Warn("minting X509-SVIDs failed; serving cached SVIDs", "error", err, "attempt", attempt)
			wait = Backoff(attempt, c.cfg.RetryMin, c.cfg.RetryMax, c.cfg.Rand())
			attempt++
		} else {
			attempt = 0
		}
		if next.IsZero() && err == nil {
			wait = time.Hour
		}
		if d := c.release(now, &released); d > 0 {
			wait = min(wait, d)
		}
		t := c.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-c.wake:
			t.Stop()
		}
	}
}

// pending is one CSR on its way to the CA.
type pending struct {
	entryID string
	gen     uint64
	id      spiffeid.ID
	key     crypto.Signer
	csr     []byte
}

// MintDue mints, in batches, an SVID for every entry that has none, whose
// entry changed, whose SVID is due for rotation at the current time, or whose
// SVID was signed by a tainted or revoked CA key. It returns when the next
// SVID will be due (zero: none held), and the first error of a batch call.
func (c *Cache) MintDue(ctx context.Context) (next time.Time, err error) {
	now := c.cfg.Clock.Now()
	due, next := c.scan(now)
	for start := 0; start < len(due); start += c.cfg.BatchSize {
		batch := due[start:min(start+c.cfg.BatchSize, len(due))]
		err := c.mintBatch(ctx, now, batch)
		// The batch's keys and CSRs are garbage now (an installed SVID
		// keeps its key in its own form): left in due, every key and CSR
		// of a large pass would stay live until the pass ends, and the
		// heap would grow to hold them all.
		clear(batch)
		if err != nil {
			return c.nextDue(), err
		}
	}
	if len(due) > 0 {
		next = c.nextDue()
	}
	return next, nil
}

// scan lists the entries due at now (under the lock) and when the next
// not-yet-due one will be.
func (c *Cache) scan(now time.Time) (due []pending, next time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range sortedIDs(c.entries) {
		e := c.entries[id]
		if now.Before(e.retryAt) {
			next = earliest(next, e.retryAt)
			continue
		}
		if e.svid != nil && !e.stale && !c.bad[e.caKeyID()] && now.Before(e.rotateAt) {
			next = earliest(next, e.rotateAt)
			continue
		}
		due = append(due, pending{entryID: id, gen: e.gen, id: e.SPIFFEID})
	}
	return due, next
}

func (c *Cache) nextDue() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, e := range c.entries {
		switch {
		case e.svid == nil || e.stale || c.bad[e.caKeyID()]:
			next = earliest(next, e.retryAt)
		default:
			next = earliest(next, e.rotateAt)
		}
	}
	return next
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// mintBatch makes keys and CSRs (outside the lock), asks the CA to sign them
// in one call, and installs each SVID that still fits its entry.
func (c *Cache) mintBatch(ctx context.Context, now time.Time, batch []pending) error {
	req := &nodev1.SignX509SVIDsRequest{Csrs: make([]*nodev1.CSRForEntry, 0, len(batch))}
	c.mu.Lock()
	dns := make([][]string, len(batch))
	for i, p := range batch {
		if e, ok := c.entries[p.entryID]; ok {
			dns[i] = e.DNSNames
		}
	}
	c.mu.Unlock()
	for i := range batch {
		key, err := c.cfg.NewKey()
		if err != nil {
			return fmt.Errorf("generate workload key: %w", err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			URIs:     []*url.URL{batch[i].id.URL()},
			DNSNames: dns[i],
		}, key)
		if err != nil {
			return fmt.Errorf("create csr for %s: %w", batch[i].id, err)
		}
		batch[i].key, batch[i].csr = key, csr
		req.Csrs = append(req.Csrs, &nodev1.CSRForEntry{EntryId: batch[i].entryID, Csr: csr})
	}
	resp, err := c.cfg.Client.SignX509SVIDs(ctx, req)
	if err != nil {
		c.cfg.Metrics.mintErrors.Inc()
		return fmt.Errorf("sign %d x509-svids: %w", len(batch), err)
	}
	if len(resp.GetResults()) != len(batch) {
		c.cfg.Metrics.mintErrors.Inc()
		return fmt.Errorf("sign x509-svids: the CA answered %d results for %d CSRs", len(resp.GetResults()), len(batch))
	}

	installed := c.cfg.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var ch changes
	for i, r := range resp.GetResults() {
		p := batch[i]
		e, ok := c.entries[p.entryID]
		if !ok || e.gen != p.gen || r.GetEntryId() != p.entryID {
			continue // deleted or changed meanwhile; the next scan handles it
		}
		parsed, err := c.check(r, p)
		var svid *held
		if err == nil {
			svid, err = hold(parsed)
		}
		if err != nil {
			c.cfg.Metrics.mintErrors.Inc()
			e.failures++
			e.retryAt = now.Add(Backoff(e.failures-1, c.cfg.RetryMin, c.cfg.RetryMax, c.cfg.Rand()))
			c.cfg.Logger.Warn("the CA refused an X509-SVID", "entry_id", p.entryID, "spiffe_id", p.id.String(), "error", err)
			continue
		}
		if e.svid != nil {
			c.cfg.Metrics.rotations.Inc()
		} else {
			c.nsvids++
		}
		c.noteChurn(1, installed)
		e.svid, e.caKey, e.stale, e.failures, e.retryAt = svid, unique.Make(r.GetCaKeyId()), false, 0, time.Time{}
		e.jitter = c.cfg.Rand()
		leaf := parsed.Certificates[0]
		e.rotateAt = RotateAt(leaf.NotBefore, leaf.NotAfter, e.jitter)
		e.validFrom, e.validUntil = Validity(parsed.Certificates)
		e.usable = Usable(installed, e.validFrom, e.validUntil)
		ch.add(e)
	}
	c.cfg.Metrics.svids.Set(float64(c.nsvids))
	c.notifyLocked(ch)
	if !ch.empty() {
		c.pokeExpiry()
	}
	return nil
}

// check turns one result into an SVID and makes sure it is the one asked
// for: an X509-SVID for the entry's ID over the key we generated.
func (c *Cache) check(r *nodev1.SignResult, p pending) (*x509svid.SVID, error) {
	if r.GetError() != "" {
		return nil, fmt.Errorf("refused: %s", r.GetError())
	}
	if len(r.GetCertChain()) == 0 {
		return nil, fmt.Errorf("empty certificate chain")
	}
	certs := make([]*x509.Certificate, 0, len(r.GetCertChain()))
	for i, der := range r.GetCertChain() {
		cert, err := c.parseChainCert(i, der)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	if id != p.id {
		return nil, fmt.Errorf("the CA signed %s, want %s", id, p.id)
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(p.key.Public()) {
		return nil, fmt.Errorf("the leaf's key is not the one in the CSR")
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: p.key}, nil
}

// maxInterned bounds the CA certificates shared between SVID chains.
const maxInterned = 64

// parseChainCert parses the certificate at position i of a chain. The CA
// certificates after the leaf are the same in every chain: one parsed copy
// is shared, which roughly halves the memory an SVID holds. Callers hold
// c.mu.
func (c *Cache) parseChainCert(i int, der []byte) (*x509.Certificate, error) {
	if i == 0 {
		return parseCert(der)
	}
	if cert, ok := c.interned[string(der)]; ok {
		return cert, nil
	}
	cert, err := parseCert(der)
	if err != nil {
		return nil, err
	}
	if len(c.interned) >= maxInterned {
		clear(c.interned)
	}
	c.interned[string(der)] = cert
	return cert, nil
}
