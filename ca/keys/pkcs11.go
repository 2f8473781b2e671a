//go:build cgo

package keys

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/pkcs11"
)

// PKCS11 keeps keys in a PKCS#11 token (an HSM, SoftHSM2, ...). The key
// called name is the object labelled "sigil-<name>" whose CKA_ID is that
// label's bytes. Private keys are created non-extractable and never leave the
// token. Binaries built without cgo cannot use it.
type PKCS11 struct {
	kms *pkcs11.PKCS11
	// mu is held for writing while objects are deleted and created, so
	// that two callers replacing one name cannot leave two objects with one
	// label, and a reader never sees a name between its old and new key.
	mu sync.RWMutex
}

var (
	_ Manager = (*PKCS11)(nil)
	_ Deleter = (*PKCS11)(nil)
)

// NewPKCS11 loads the module and logs into the token named by cfg.URI.
// Call Close when done.
func NewPKCS11(ctx context.Context, cfg PKCS11Config) (*PKCS11, error) {
	if cfg.URI == "" {
		return nil, errors.New("pkcs11: empty uri")
	}
	if !strings.HasPrefix(cfg.URI, "pkcs11:") {
		return nil, errors.New(`pkcs11: uri must start with "pkcs11:"`)
	}
	k, err := pkcs11.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: cfg.URI})
	if err != nil {
		// Some of the library's errors quote the whole URI, PIN included.
		return nil, fmt.Errorf("pkcs11: open token: %s", redactPIN(err.Error(), cfg.URI))
	}
	return &PKCS11{kms: k}, nil
}

// Close logs out and unloads the module. Signers handed out before become
// unusable.
func (p *PKCS11) Close() error {
	if err := p.kms.Close(); err != nil {
		return fmt.Errorf("pkcs11: close: %w", err)
	}
	return nil
}

// redactPIN removes the URI's pin-value, raw or unescaped, from msg.
func redactPIN(msg, rawURI string) string {
	_, query, _ := strings.Cut(rawURI, "?")
	for _, kv := range strings.FieldsFunc(rawURI+"&"+query, func(r rune) bool { return r == ';' || r == '&' || r == '?' }) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k != "pin-value" || v == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, v, "REDACTED")
		if u, err := url.QueryUnescape(v); err == nil && u != "" {
			msg = strings.ReplaceAll(msg, u, "REDACTED")
		}
	}
	return msg
}

// objectURI is the KMS URI of the object that holds the key called name.
func objectURI(name string) string {
	label := "sigil-" + name
	return "pkcs11:id=" + hex.EncodeToString([]byte(label)) + ";object=" + label
}

// GenerateKey makes a new key pair in the token, destroying any old key pair
// of that name first: unlike Memory and Disk, signers of the old key that
// callers still hold stop working.
func (p *PKCS11) GenerateKey(_ context.Context, name string, t Type) (crypto.Signer, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	s, err := t.spec()
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	u := objectURI(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.kms.DeleteKey(u); err != nil {
		return nil, fmt.Errorf("key %s: delete old key: %w", name, err)
	}
	if _, err := p.kms.CreateKey(&apiv1.CreateKeyRequest{
		Name:               u,
		SignatureAlgorithm: s.alg,
		Bits:               s.bits,
	}); err != nil {
		return nil, fmt.Errorf("key %s: generate %s in token: %w", name, t, err)
	}
	signer, err := p.kms.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: u})
	if err != nil {
		return nil, fmt.Errorf("key %s: find new key: %w", name, err)
	}
	return signer, nil
}

// Signer finds the key called name in the token.
func (p *PKCS11) Signer(_ context.Context, name string) (crypto.Signer, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.find(name)
}

func (p *PKCS11) find(name string) (crypto.Signer, error) {
	signer, err := p.kms.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: objectURI(name)})
	if err != nil {
		if errors.Is(err, apiv1.NotFoundError{}) {
			return nil, fmt.Errorf("key %s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	return signer, nil
}

// DeleteKey destroys the key pair called name in the token.
func (p *PKCS11) DeleteKey(_ context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.find(name); err != nil {
		return err
	}
	if err := p.kms.DeleteKey(objectURI(name)); err != nil {
		return fmt.Errorf("key %s: delete: %w", name, err)
	}
	return nil
}
