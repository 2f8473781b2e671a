package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/sigilhq/sigil/ca/keys"
)

// mismatchHint is what every ErrStateMismatch tells the operator to do.
const mismatchHint = "restore this CA's database, or point the store, key manager and upstream at one CA's data; " +
	"to start a new CA on purpose, delete the old CA's keys and self-signed root first"

// keyName is the key manager name of the CA key of kind made at seq.
func keyName(kind KeyKind, seq int) string {
	return fmt.Sprintf("%s-%d", kind, seq)
}

// firstStartSeqs are the sequence numbers a new journal gives its first
// keys: Init makes an X.509 and a JWT key at once, and the CA deletes only
// keys an operator revoked (which needs a newer key activated first), so a
// key manager that has run a CA holds at least one of these unless both
// first keys were revoked.
var firstStartSeqs = [...]int{1, 2}

// checkFirstStart runs when the store holds no journal for this instance.
// If the key manager already holds keys a journal would have named, this is
// not a first start but a lost, emptied or foreign database, and going on
// would make new keys over the old ones.
func (c *CA) checkFirstStart(ctx context.Context) error {
	for _, seq := range firstStartSeqs {
		for _, kind := range []KeyKind{X509, JWT} {
			name := keyName(kind, seq)
			_, err := c.cfg.Keys.Signer(ctx, name)
			switch {
			case errors.Is(err, keys.ErrNotFound):
				continue
			case err != nil:
				return fmt.Errorf("check for earlier ca keys: %w", err)
			}
			return fmt.Errorf("%w: the store holds no CA journal for instance %q, but the key manager already holds CA key %q, "+
				"so this CA has run before and its database is empty, new or another CA's: %s",
				ErrStateMismatch, c.cfg.InstanceID, name, mismatchHint)
		}
	}
	return nil
}

// checkRoots refuses a journal whose X.509 CA keys were not issued under
// any of the upstream's roots: a database of another CA, or a root that was
// replaced behind the journal's back.
func (c *CA) checkRoots(ctx context.Context, doc journalDoc) error {
	if len(doc.X509) == 0 {
		return nil
	}
	up, err := c.cfg.Upstream.Roots(ctx)
	if err != nil {
		return fmt.Errorf("check ca journal against upstream roots: %w", err)
	}
	// A root the journal keeps (retiring after a changed disk or step_ca
	// upstream) still anchors the keys it issued. A self_signed upstream
	// keeps every root of a rotation in its own file.
	roots := up
	if _, ok := c.cfg.Upstream.(RootRotator); !ok {
		roots = allRoots(up, doc)
	}
	for _, rec := range doc.X509 {
		if len(rec.Chain) == 0 {
			return fmt.Errorf("ca journal: x509 key %s has no certificate", rec.ID)
		}
		top, err := x509.ParseCertificate(rec.Chain[len(rec.Chain)-1])
		if err != nil {
			return fmt.Errorf("ca journal: x509 key %s: parse certificate: %w", rec.ID, err)
		}
		if issuedUnder(top, roots) {
			continue
		}
		return fmt.Errorf("%w: ca journal: x509 key %s was issued under a root with key ID %x, "+
			"but the upstream's roots are %s: the database is another CA's, or the upstream root was replaced "+
			"(keep the old root among the upstream's roots until the keys it signed expire): %s",
			ErrStateMismatch, rec.ID, top.AuthorityKeyId, describeRoots(roots), mismatchHint)
	}
	return nil
}

// issuedUnder reports whether cert is one of roots or is signed by one.
func issuedUnder(cert *x509.Certificate, roots []*x509.Certificate) bool {
	for _, r := range roots {
		if bytes.Equal(cert.Raw, r.Raw) || cert.CheckSignatureFrom(r) == nil {
			return true
		}
	}
	return false
}

func describeRoots(roots []*x509.Certificate) string {
	if len(roots) == 0 {
		return "none"
	}
	out := make([]string, len(roots))
	for i, r := range roots {
		sum := sha256.Sum256(r.Raw)
		out[i] = fmt.Sprintf("%q (key ID %x, sha256 %s)", r.Subject.CommonName, r.SubjectKeyId, hex.EncodeToString(sum[:8]))
	}
	return strings.Join(out, ", ")
}

// signerFor loads a key the journal names; a key the key manager does not
// hold means the journal and the keys belong to different CAs.
func (c *CA) signerFor(ctx context.Context, name string) (crypto.Signer, error) {
	s, err := c.cfg.Keys.Signer(ctx, name)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, fmt.Errorf("%w: the journal names key %q, which the key manager does not hold: %s", ErrStateMismatch, name, mismatchHint)
	}
	return s, err
}
