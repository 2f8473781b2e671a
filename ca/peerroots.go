package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/sigilhq/sigil/ca/store"
)

// DirectUpstream is implemented by an Upstream whose roots sign the CA's
// signing certificates directly, with no intermediate (upstream.SelfSigned).
// For such an upstream the CA can tell for sure whether another replica's
// signing certificate is under the same root.
type DirectUpstream interface {
	SignsDirectly() bool
}

// ErrForeignRoot is wrapped by Init when the store's bundle holds another
// replica's signing certificate issued under a root this replica does not
// have. It wraps ErrStateMismatch too.
var ErrForeignRoot = fmt.Errorf("%w: replicas with different roots", ErrStateMismatch)

// checkPeerRoots refuses to start a replica whose (self-signed) root is
// not the root of the other replicas sharing its store. Each replica with
// its own self-signed root would verify agents and workloads by its root
// alone: an agent attested to one replica would be refused by the other
// ("unknown certificate authority"), and failover would fail. Only an
// upstream that signs directly is checked: under an upstream with
// intermediates a peer's certificate does not show its root.
func (c *CA) checkPeerRoots(ctx context.Context, doc journalDoc) error {
	du, ok := c.cfg.Upstream.(DirectUpstream)
	if !ok || !du.SignsDirectly() {
		return nil
	}
	have, err := c.cfg.Store.GetBundle(ctx, c.cfg.TrustDomain.Name())
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check other replicas' roots: %w", err)
	}
	roots, err := c.cfg.Upstream.Roots(ctx)
	if err != nil {
		return fmt.Errorf("check other replicas' roots: upstream roots: %w", err)
	}
	own := map[string]bool{}
	for _, rec := range doc.X509 {
		own[rec.ID] = true
	}
	for _, id := range doc.RevokedX509 {
		own[id] = true
	}
	now := c.cfg.Now()
	for _, der := range have.X509Authorities {
		cert, err := x509.ParseCertificate(der)
		if err != nil || !now.Before(cert.NotAfter) || own[keyIDForCert(cert)] {
			continue // unparsable or expired: publishBundle drops it
		}
		if issuedUnder(cert, roots) {
			continue
		}
		return fmt.Errorf("%w: the shared store's bundle holds signing key %s of another CA replica, issued under a root "+
			"(key ID %x) that is not this replica's self-signed root (%s). Each self_signed replica makes its own root, so "+
			"agents attested to one replica would be refused by the other. Give every replica the same root: copy the first "+
			"replica's root certificate (upstream.cert_path) and its key %q from its key manager to this replica, or set "+
			"upstream.type: disk with the same cert_file and key_file on every replica. If that replica is gone for good, "+
			"its key leaves the bundle when it expires at %s",
			ErrForeignRoot, keyIDForCert(cert)[:16], cert.AuthorityKeyId, describeRoots(roots), "root", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
