package keys

import "errors"

// PKCS11Config says which token holds the keys.
type PKCS11Config struct {
	// URI names the module, the token and its PIN, e.g.
	// "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=sigil?pin-value=1234"
	// (or pin-source=/path/to/pin). It may hold the PIN: never log it.
	URI string
}

// ErrPKCS11NotBuilt is NewPKCS11's error in a binary built without cgo:
// loading a PKCS#11 module takes cgo (pkcs11.go holds the real thing,
// pkcs11_nocgo.go the stand-in).
var ErrPKCS11NotBuilt = errors.New("PKCS#11 is not in this build (built without cgo): " +
	"rebuild sigil with CGO_ENABLED=1 and a C compiler, or use key_manager: disk")
