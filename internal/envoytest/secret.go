package envoytest

import (
	"crypto/tls"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sigilhq/sigil/internal/pemfile"
)

// SecretTypeURL is the xDS type URL of a Secret.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// DecodeSecret unpacks a Secret and checks it as Envoy would before using
// it: the proto's rules, a certificate chain and private key that form a
// key pair, a trusted CA or SPIFFE validator bundle that parses.
func DecodeSecret(a *anypb.Any) (*tlsv3.Secret, error) {
	if a.GetTypeUrl() != SecretTypeURL {
		return nil, fmt.Errorf("resource type %q, want %s", a.GetTypeUrl(), SecretTypeURL)
	}
	s := &tlsv3.Secret{}
	if err := a.UnmarshalTo(s); err != nil {
		return nil, fmt.Errorf("decode secret: %w", err)
	}
	if err := Validate(s); err != nil {
		return nil, err
	}
	switch t := s.Type.(type) {
	case *tlsv3.Secret_TlsCertificate:
		if _, err := tls.X509KeyPair(t.TlsCertificate.GetCertificateChain().GetInlineBytes(),
			t.TlsCertificate.GetPrivateKey().GetInlineBytes()); err != nil {
			return nil, fmt.Errorf("secret %q: tls certificate: %w", s.Name, err)
		}
	case *tlsv3.Secret_ValidationContext:
		vc := t.ValidationContext
		if cv := vc.GetCustomValidatorConfig(); cv != nil {
			cfg := &tlsv3.SPIFFECertValidatorConfig{}
			if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("secret %q: custom validator %q: %w", s.Name, cv.GetName(), err)
			}
			for _, td := range cfg.TrustDomains {
				if _, err := pemfile.ParseCerts(td.GetTrustBundle().GetInlineBytes()); err != nil {
					return nil, fmt.Errorf("secret %q: trust domain %q: %w", s.Name, td.GetName(), err)
				}
			}
		} else if _, err := pemfile.ParseCerts(vc.GetTrustedCa().GetInlineBytes()); err != nil {
			return nil, fmt.Errorf("secret %q: trusted ca: %w", s.Name, err)
		}
	default:
		return nil, fmt.Errorf("secret %q: unsupported type %T", s.Name, s.Type)
	}
	return s, nil
}
