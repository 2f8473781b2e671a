package cache

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"weak"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// held is one X509-SVID as the cache keeps it: the leaf's DER, the private
// key's PKCS#8 bytes and the CA certificates of the chain, parsed once and
// shared with every other SVID of the same issuer. The parsed form
// (x509.Certificate, ecdsa.PrivateKey) is several times larger than these
// bytes, so it is made when a workload is handed the SVID and kept only as
// long as someone holds it: 50,000 SVIDs cached cost their bytes, not
// 50,000 parsed certificates.
type held struct {
	leaf   []byte              // DER
	key    []byte              // PKCS#8 (see compactPKCS8); nil when signer is set
	signer crypto.Signer       // a key without a PKCS#8 form (kept as is)
	chain  []*x509.Certificate // after the leaf; shared, never modified
	// parsed is the last parsed form handed out, while any holder keeps
	// it alive: subscribers of one SVID share one parsed copy.
	parsed weak.Pointer[x509svid.SVID]
}

// hold makes the compact form of svid, whose leaf is svid.Certificates[0]
// and whose CA certificates are chain (shared). It keeps svid itself as the
// parsed form for as long as a caller holds it.
func hold(svid *x509svid.SVID) (*held, error) {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, errors.New("an x509-svid needs a leaf and a key")
	}
	// The chain is copied: a subslice of svid.Certificates would keep the
	// parsed leaf alive through the shared backing array.
	h := &held{leaf: svid.Certificates[0].Raw, chain: slices.Clone(svid.Certificates[1:])}
	if key, err := compactPKCS8(svid.PrivateKey); err == nil {
		h.key = key
	} else {
		h.signer = svid.PrivateKey
	}
	h.parsed = weak.Make(svid)
	return h, nil
}

// svid returns the parsed SVID: the one handed out last if it is still
// held somewhere, else a new parse of the kept bytes. Callers must not
// modify it. Callers hold c.mu (or own h alone).
func (h *held) svid() (*x509svid.SVID, error) {
	if s := h.parsed.Value(); s != nil {
		return s, nil
	}
	leaf, err := x509.ParseCertificate(h.leaf)
	if err != nil {
		return nil, fmt.Errorf("parse kept leaf: %w", err)
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("parse kept leaf: %w", err)
	}
	key := h.signer
	if key == nil {
		k, err := x509.ParsePKCS8PrivateKey(h.key)
		if err != nil {
			return nil, fmt.Errorf("parse kept key: %w", err)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse kept key: %T is not a signer", k)
		}
		key = signer
	}
	certs := make([]*x509.Certificate, 0, 1+len(h.chain))
	certs = append(certs, leaf)
	certs = append(certs, h.chain...)
	s := &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	h.parsed = weak.Make(s)
	return s, nil
}

// mustSVID is svid for callers that already know the bytes parse (they
// were parsed when the SVID arrived); on the impossible failure it returns
// nil and the caller treats the entry as holding no SVID.
func (h *held) mustSVID(log func(msg string, args ...any), id spiffeid.ID) *x509svid.SVID {
	s, err := h.svid()
	if err != nil {
		log("a cached X509-SVID no longer parses", "spiffe_id", id.String(), "error", err)
		return nil
	}
	return s
}

// compactPKCS8 is key as PKCS#8; an ECDSA key without the copy of its
// public key that SEC 1 makes optional (RFC 5915 section 3), which Go's
// parser recomputes from the scalar whether it is there or not: 67 bytes
// instead of 138 for P-256, held for every SVID.
func compactPKCS8(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if _, ok := key.(*ecdsa.PrivateKey); !ok {
		return der, nil
	}
	var p pkcs8
	if rest, err := asn1.Unmarshal(der, &p); err != nil || len(rest) > 0 {
		return der, nil // not what MarshalPKCS8PrivateKey makes today: keep it whole
	}
	var ec ecPrivateKey
	if rest, err := asn1.Unmarshal(p.PrivateKey, &ec); err != nil || len(rest) > 0 {
		return der, nil
	}
	ec.PublicKey = asn1.BitString{}
	if p.PrivateKey, err = asn1.Marshal(ec); err != nil {
		return nil, err
	}
	return asn1.Marshal(p)
}

// pkcs8 and ecPrivateKey are RFC 5208's PrivateKeyInfo and RFC 5915's
// ECPrivateKey.
type pkcs8 struct {
	Version    int
	Algo       pkix.AlgorithmIdentifier
	PrivateKey []byte
}

type ecPrivateKey struct {
	Version       int
	PrivateKey    []byte
	NamedCurveOID asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey     asn1.BitString        `asn1:"optional,explicit,tag:1"`
}
