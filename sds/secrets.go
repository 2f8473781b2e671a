package sds

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sigilhq/sigil/internal/workload"
)

// SecretTypeURL is the xDS type of every resource this package serves.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// SPIFFEValidatorName is the name Envoy knows its SPIFFE certificate
// validator extension by.
const SPIFFEValidatorName = "envoy.tls.cert_validator.spiffe"

// errBadName marks a resource name that can never be served.
var errBadName = errors.New("resource name can never be served")

// resource is one served secret, packed once.
type resource struct {
	version string // first 16 hex digits of SHA-256 of the packed secret
	any     *anypb.Any
}

// names are the configured special resource names.
type names struct {
	defaultSVID, rootCA, all string
}

// snapshot is what one caller may be served at one moment. It resolves
// names lazily and caches each result; it is used by one goroutine only.
type snapshot struct {
	names  names
	update workload.Update
	certs  *certCache
	cache  map[string]resolved
}

type resolved struct {
	res *resource // nil: not servable now
	err error     // set: never servable (bad name)
}

func newSnapshot(n names, u workload.Update, certs *certCache) *snapshot {
	return &snapshot{names: n, update: u, certs: certs, cache: make(map[string]resolved)}
}

// certCache shares packed tls_certificate secrets between streams: after
// a rotation, every stream of every caller holding the new SVID would
// otherwise encode the same key and chain again. Entries are keyed by the
// SVID's identity (sources hand out SVIDs that are not modified after
// publication) through weak pointers, and are dropped when the SVID is
// collected, so the cache holds no key longer than the source does.
type certCache struct {
	mu sync.Mutex
	m  map[certKey]*resource
}

type certKey struct {
	name string
	svid weak.Pointer[x509svid.SVID]
}

func newCertCache() *certCache { return &certCache{m: make(map[certKey]*resource)} }

func (c *certCache) get(name string, svid *x509svid.SVID, build func() (*resource, error)) (*resource, error) {
	key := certKey{name: name, svid: weak.Make(svid)}
	c.mu.Lock()
	r, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return r, nil
	}
	r, err := build()
	if err != nil || r == nil {
		return r, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.m[key]; ok {
		return prev, nil
	}
	c.m[key] = r
	runtime.AddCleanup(svid, c.drop, key)
	return r, nil
}

func (c *certCache) drop(key certKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

func (c *certCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// resolve returns the resource for name, nil if it cannot be served now,
// or an error wrapping errBadName if it never can be.
func (s *snapshot) resolve(name string) (*resource, error) {
	if s == nil {
		return nil, nil
	}
	if r, ok := s.cache[name]; ok {
		return r.res, r.err
	}
	res, err := s.build(name)
	s.cache[name] = resolved{res: res, err: err}
	return res, err
}

func (s *snapshot) build(name string) (*resource, error) {
	switch name {
	case s.names.defaultSVID:
		return s.tlsCertificate(name, func(workload.Identity) bool { return true })
	case s.names.rootCA:
		return pack(validationContext(name, s.update.Bundle, s.update.X509CRLs))
	case s.names.all:
		return pack(s.allBundles(name))
	}
	if !strings.HasPrefix(name, "spiffe://") {
		return nil, fmt.Errorf("%w: %q is not %q, %q, %q, a SPIFFE ID or a trust domain ID", errBadName,
			truncate(name), s.names.defaultSVID, s.names.rootCA, s.names.all)
	}
	id, err := spiffeid.FromString(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", errBadName, truncate(name), err)
	}
	if id.Path() == "" {
		td := id.TrustDomain()
		if s.update.Bundle != nil && s.update.Bundle.TrustDomain() == td {
			return pack(validationContext(name, s.update.Bundle, s.update.X509CRLs))
		}
		return pack(validationContext(name, s.update.FederatedBundles[td], nil))
	}
	return s.tlsCertificate(name, func(i workload.Identity) bool { return i.SVID.ID == id })
}

// tlsCertificate serves the matching identity with the smallest entry ID.
func (s *snapshot) tlsCertificate(name string, match func(workload.Identity) bool) (*resource, error) {
	var best *workload.Identity
	for i := range s.update.Identities {
		ident := &s.update.Identities[i]
		if ident.SVID == nil || len(ident.SVID.Certificates) == 0 || ident.SVID.PrivateKey == nil || !match(*ident) {
			continue
		}
		if best == nil || ident.EntryID < best.EntryID {
			best = ident
		}
	}
	if best == nil {
		return nil, nil
	}
	return s.certs.get(name, best.SVID, func() (*resource, error) { return packSVID(name, best.SVID) })
}

func packSVID(name string, svid *x509svid.SVID) (*resource, error) {
	chain, key, err := svid.Marshal()
	if err != nil {
		// Not the caller's fault, and not a bad name: the source handed
		// out an SVID that cannot be encoded. Keep it pending.
		return nil, nil
	}
	return pack(&tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain),
			PrivateKey:       inline(key),
		}},
	}, nil)
}

// validationContext trusts b's X.509 authorities and, when there are any,
// checks the peer's leaf against crls. Only the leaf: Envoy otherwise wants
// a CRL for every certificate of the chain (the signing key's certificate
// too, from the upstream root) and fails every handshake without one. Our
// CA signs one CRL per signing key, so every leaf of ours is checked.
func validationContext(name string, b *spiffebundle.Bundle, crls [][]byte) (*tlsv3.Secret, error) {
	if b == nil || len(b.X509Authorities()) == 0 {
		return nil, nil
	}
	vc := &tlsv3.CertificateValidationContext{TrustedCa: inline(certsPEM(b.X509Authorities()))}
	if len(crls) > 0 {
		var out []byte
		for _, der := range crls {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
		}
		vc.Crl = inline(out)
		vc.OnlyVerifyLeafCertCrl = true
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}, nil
}

// allBundles is a validation context whose SPIFFE validator holds every
// trust domain's bundle, own and federated, sorted by trust domain.
func (s *snapshot) allBundles(name string) (*tlsv3.Secret, error) {
	var bundles []*spiffebundle.Bundle
	if s.update.Bundle != nil {
		bundles = append(bundles, s.update.Bundle)
	}
	for td, b := range s.update.FederatedBundles {
		if b != nil && (s.update.Bundle == nil || td != s.update.Bundle.TrustDomain()) {
			bundles = append(bundles, b)
		}
	}
	slices.SortFunc(bundles, func(a, b *spiffebundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	for _, b := range bundles {
		if len(b.X509Authorities()) == 0 {
			continue
		}
		cfg.TrustDomains = append(cfg.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name:        b.TrustDomain().Name(),
			TrustBundle: inline(certsPEM(b.X509Authorities())),
		})
	}
	if len(cfg.TrustDomains) == 0 {
		return nil, nil
	}
	typed, err := anypb.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("pack spiffe validator config: %w", err)
	}
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: SPIFFEValidatorName, TypedConfig: typed},
		}},
	}, nil
}

// pack encodes a secret once; a nil secret (nothing to serve) or an error
// passes through.
func pack(secret *tlsv3.Secret, err error) (*resource, error) {
	if err != nil || secret == nil {
		return nil, err
	}
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, secret, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("pack secret %q: %w", secret.Name, err)
	}
	sum := sha256.Sum256(a.Value)
	return &resource{version: hex.EncodeToString(sum[:8]), any: a}, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func certsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// truncate bounds a caller-supplied name before it goes into an error or
// a log line.
func truncate(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
