package sds

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
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
	update Update
	cache  map[string]resolved
}

type resolved struct {
	res *resource // nil: not servable now
	err error     // set: never servable (bad name)
}

func newSnapshot(n names, u Update) *snapshot {
	return &snapshot{names: n, update: u, cache: make(map[string]resolved)}
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
	secret, err := s.build(name)
	var res *resource
	if err == nil && secret != nil {
		res, err = pack(secret)
	}
	s.cache[name] = resolved{res: res, err: err}
	return res, err
}

func (s *snapshot) build(name string) (*tlsv3.Secret, error) {
	switch name {
	case s.names.defaultSVID:
		return s.tlsCertificate(name, func(Identity) bool { return true })
	case s.names.rootCA:
		return validationContext(name, s.update.Bundle)
	case s.names.all:
		return s.allBundles(name)
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
			return validationContext(name, s.update.Bundle)
		}
		return validationContext(name, s.update.FederatedBundles[td])
	}
	return s.tlsCertificate(name, func(i Identity) bool { return i.SVID.ID == id })
}

// tlsCertificate serves the matching identity with the smallest entry ID.
func (s *snapshot) tlsCertificate(name string, match func(Identity) bool) (*tlsv3.Secret, error) {
	var best *Identity
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
	chain, key, err := best.SVID.Marshal()
	if err != nil {
		// Not the caller's fault, and not a bad name: the source handed
		// out an SVID that cannot be encoded. Keep it pending.
		return nil, nil
	}
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain),
			PrivateKey:       inline(key),
		}},
	}, nil
}

func validationContext(name string, b *spiffebundle.Bundle) (*tlsv3.Secret, error) {
	if b == nil || len(b.X509Authorities()) == 0 {
		return nil, nil
	}
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(certsPEM(b.X509Authorities())),
		}},
	}, nil
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

func pack(secret *tlsv3.Secret) (*resource, error) {
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
