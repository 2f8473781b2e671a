package keys

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/kms/apiv1"
)

// Type is the algorithm and size of a signing key.
type Type string

// The key types every Manager can make.
const (
	ECP256  Type = "ec-p256"
	ECP384  Type = "ec-p384"
	RSA2048 Type = "rsa-2048"
	RSA3072 Type = "rsa-3072"
	RSA4096 Type = "rsa-4096"
)

// types lists every supported key type, in the order error messages show them.
var types = []Type{ECP256, ECP384, RSA2048, RSA3072, RSA4096}

// Types returns every supported key type.
func Types() []Type { return append([]Type(nil), types...) }

// ParseType reads a key type name such as "ec-p256".
func ParseType(s string) (Type, error) {
	for _, t := range types {
		if string(t) == s {
			return t, nil
		}
	}
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = string(t)
	}
	return "", fmt.Errorf("unknown key type %q: valid types are %s", s, strings.Join(names, ", "))
}

// ErrNotFound is wrapped by Signer and DeleteKey when no key has that name.
var ErrNotFound = errors.New("key not found")

// Manager makes and finds signing keys by logical name ("x509-3", "jwt-7",
// "root"). Names are 1 to 64 characters of [a-z0-9-]. Every Manager is safe
// for concurrent use.
type Manager interface {
	// GenerateKey makes a new key of type t under name, replacing any key
	// that had that name.
	GenerateKey(ctx context.Context, name string, t Type) (crypto.Signer, error)
	// Signer finds the key called name; the error wraps ErrNotFound when
	// there is none.
	Signer(ctx context.Context, name string) (crypto.Signer, error)
}

// Deleter is the optional ability to delete a key. Deleting a key that does
// not exist returns an error wrapping ErrNotFound.
type Deleter interface {
	DeleteKey(ctx context.Context, name string) error
}

// MaxNameLen bounds a key's logical name.
const MaxNameLen = 64

// ValidateName reports whether name is a valid logical key name.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("invalid key name: empty")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("invalid key name %.64q...: longer than %d characters", name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("invalid key name %q: only a-z, 0-9 and '-' are allowed", name)
		}
	}
	return nil
}

// spec is how a Type maps onto the libraries' vocabularies.
type spec struct {
	kty, crv string
	bits     int
	alg      apiv1.SignatureAlgorithm
}

func (t Type) spec() (spec, error) {
	switch t {
	case ECP256:
		return spec{kty: "EC", crv: "P-256", alg: apiv1.ECDSAWithSHA256}, nil
	case ECP384:
		return spec{kty: "EC", crv: "P-384", alg: apiv1.ECDSAWithSHA384}, nil
	case RSA2048:
		return spec{kty: "RSA", bits: 2048, alg: apiv1.SHA256WithRSA}, nil
	case RSA3072:
		return spec{kty: "RSA", bits: 3072, alg: apiv1.SHA256WithRSA}, nil
	case RSA4096:
		return spec{kty: "RSA", bits: 4096, alg: apiv1.SHA256WithRSA}, nil
	}
	_, err := ParseType(string(t))
	return spec{}, err
}

// generateSoft makes a key in process memory.
func generateSoft(t Type) (crypto.Signer, error) {
	s, err := t.spec()
	if err != nil {
		return nil, err
	}
	signer, err := keyutil.GenerateSigner(s.kty, s.crv, s.bits)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", t, err)
	}
	return signer, nil
}
