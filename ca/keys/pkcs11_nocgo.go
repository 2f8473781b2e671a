//go:build !cgo

package keys

import (
	"context"
	"crypto"
)

// PKCS11 stands in for the PKCS#11 key manager in a binary built without
// cgo: NewPKCS11 always fails with ErrPKCS11NotBuilt, so a config that asks
// for pkcs11 stops at start with a message that says why.
type PKCS11 struct{}

var (
	_ Manager = (*PKCS11)(nil)
	_ Deleter = (*PKCS11)(nil)
)

// NewPKCS11 returns ErrPKCS11NotBuilt.
func NewPKCS11(context.Context, PKCS11Config) (*PKCS11, error) { return nil, ErrPKCS11NotBuilt }

// Close does nothing.
func (*PKCS11) Close() error { return nil }

// GenerateKey returns ErrPKCS11NotBuilt.
func (*PKCS11) GenerateKey(context.Context, string, Type) (crypto.Signer, error) {
	return nil, ErrPKCS11NotBuilt
}

// Signer returns ErrPKCS11NotBuilt.
func (*PKCS11) Signer(context.Context, string) (crypto.Signer, error) { return nil, ErrPKCS11NotBuilt }

// DeleteKey returns ErrPKCS11NotBuilt.
func (*PKCS11) DeleteKey(context.Context, string) error { return ErrPKCS11NotBuilt }
