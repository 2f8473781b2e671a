package envoytest_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/testca"
)

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// TestDecodeSecret: the client refuses what Envoy would refuse, so that
// Next NACKs it.
func TestDecodeSecret(t *testing.T) {
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	a, b := ca.Issue(t, "spiffe://example.org/a"), ca.Issue(t, "spiffe://example.org/b")
	chainA, keyA, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	_, keyB, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	roots := testca.CertsPEM(ca.Roots())
	spiffeCfg, err := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{
		{Name: "example.org", TrustBundle: inline(roots)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	badSpiffeCfg, _ := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: []*tlsv3.SPIFFECertValidatorConfig_TrustDomain{
		{Name: "example.org", TrustBundle: inline([]byte("not pem"))},
	}})
	emptySpiffeCfg, _ := anypb.New(&tlsv3.SPIFFECertValidatorConfig{})
	cert := func(chain, key []byte) *tlsv3.Secret {
		return &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain), PrivateKey: inline(key)}}}
	}
	vc := func(v *tlsv3.CertificateValidationContext) *tlsv3.Secret {
		return &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: v}}
	}
	tests := []struct {
		name   string
		secret proto.Message
		want   string // "" accepts
	}{
		{"key pair", cert(chainA, keyA), ""},
		{"key of another certificate", cert(chainA, keyB), "private key does not match"},
		{"no key", cert(chainA, nil), "tls certificate"},
		{"trusted ca", vc(&tlsv3.CertificateValidationContext{TrustedCa: inline(roots)}), ""},
		{"trusted ca not PEM", vc(&tlsv3.CertificateValidationContext{TrustedCa: inline([]byte("junk"))}), "no PEM block"},
		{"spiffe validator", vc(&tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
			Name: "envoy.tls.cert_validator.spiffe", TypedConfig: spiffeCfg}}), ""},
		{"spiffe validator with a bad bundle", vc(&tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
			Name: "envoy.tls.cert_validator.spiffe", TypedConfig: badSpiffeCfg}}), "trust domain"},
		{"spiffe validator without trust domains (checked inside the Any)", vc(&tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
			Name: "envoy.tls.cert_validator.spiffe", TypedConfig: emptySpiffeCfg}}), "TrustDomains"},
		{"not a secret", &tlsv3.TlsCertificate{}, "resource type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			packed, err := anypb.New(tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			_, err = envoytest.DecodeSecret(packed)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("DecodeSecret: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
