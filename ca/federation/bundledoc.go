package federation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bounds on a peer's bundle document. A real bundle holds a handful of
// keys; these leave room for rotations and long chains of old keys.
const (
	// MaxBundleSize is the largest bundle document accepted or served.
	MaxBundleSize = 1 << 20
	// MaxBundleKeys is the most keys one document may carry.
	MaxBundleKeys = 1024
	// MaxRefreshHint is the largest spiffe_refresh_hint accepted.
	MaxRefreshHint = 30 * 24 * time.Hour
)

// ErrBundle marks a bundle document that breaks the SPIFFE Trust Domain and
// Bundle spec or our bounds.
var ErrBundle = errors.New("invalid bundle document")

// bundleKey is the part of a JWK the strict checks look at.
type bundleKey struct {
	Use *string  `json:"use"`
	Kty string   `json:"kty"`
	Kid string   `json:"kid"`
	X5c []string `json:"x5c"`
}

// bundleDoc is the part of the document the strict checks look at.
type bundleDoc struct {
	Keys     *[]json.RawMessage `json:"keys"`
	Sequence *json.Number       `json:"spiffe_sequence"`
	Hint     *json.Number       `json:"spiffe_refresh_hint"`
}

// ParseBundle parses a peer's SPIFFE bundle document for trust domain td,
// more strictly than the spec requires of a consumer: at most
// MaxBundleSize bytes and MaxBundleKeys keys, one JSON object with a keys
// array, integer spiffe_sequence and spiffe_refresh_hint in range, every
// key with a use, each x509-svid key exactly one CA certificate, each
// jwt-svid key a kid, and at least one X.509 authority. Keys with a use we
// do not know are ignored, as the spec asks.
func ParseBundle(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if td.IsZero() {
		return nil, fmt.Errorf("%w: no trust domain", ErrBundle)
	}
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBundle, len(data), MaxBundleSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc bundleDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrBundle)
	}
	if doc.Keys == nil {
		return nil, fmt.Errorf("%w: no keys member", ErrBundle)
	}
	if n := len(*doc.Keys); n > MaxBundleKeys {
		return nil, fmt.Errorf("%w: %d keys, at most %d", ErrBundle, n, MaxBundleKeys)
	}
	if doc.Sequence != nil {
		if _, err := parseUint(*doc.Sequence); err != nil {
			return nil, fmt.Errorf("%w: spiffe_sequence: %v", ErrBundle, err)
		}
	}
	if doc.Hint != nil {
		h, err := parseUint(*doc.Hint)
		if err != nil {
			return nil, fmt.Errorf("%w: spiffe_refresh_hint: %v", ErrBundle, err)
		}
		if h > uint64(MaxRefreshHint/time.Second) {
			return nil, fmt.Errorf("%w: spiffe_refresh_hint %d s is over %s", ErrBundle, h, MaxRefreshHint)
		}
	}
	x509Keys := 0
	for i, raw := range *doc.Keys {
		var k bundleKey
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("%w: key %d: %v", ErrBundle, i, err)
		}
		if k.Use == nil {
			return nil, fmt.Errorf("%w: key %d: no use", ErrBundle, i)
		}
		switch *k.Use {
		case "x509-svid":
			if len(k.X5c) != 1 {
				return nil, fmt.Errorf("%w: key %d: x509-svid needs exactly one x5c certificate, has %d", ErrBundle, i, len(k.X5c))
			}
			x509Keys++
		case "jwt-svid":
			if k.Kid == "" {
				return nil, fmt.Errorf("%w: key %d: jwt-svid without kid", ErrBundle, i)
			}
		}
	}
	if x509Keys == 0 {
		return nil, fmt.Errorf("%w: no x509-svid authority", ErrBundle)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	for i, c := range b.X509Authorities() {
		if !c.IsCA {
			return nil, fmt.Errorf("%w: x509 authority %d is not a CA certificate", ErrBundle, i)
		}
	}
	return b, nil
}

// parseUint reads a JSON number that must be a non-negative integer.
func parseUint(n json.Number) (uint64, error) {
	var v uint64
	if _, err := fmt.Sscan(n.String(), &v); err != nil || fmt.Sprint(v) != n.String() {
		return 0, fmt.Errorf("%s is not a non-negative integer", n)
	}
	return v, nil
}
