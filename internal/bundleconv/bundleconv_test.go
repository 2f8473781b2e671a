package bundleconv

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/testca"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func pkix(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// jwtKeys returns one public key of each kind that signs JWT-SVIDs.
func jwtKeys(t testing.TB) map[string]crypto.PublicKey {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ed, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]crypto.PublicKey{"kid-ec": &ec.PublicKey, "kid-rsa": &rk.PublicKey, "kid-ed": ed}
}

func TestRoundTrip(t *testing.T) {
	a, b := testca.New(t, td), testca.New(t, td)
	keys := jwtKeys(t)
	tests := []struct {
		name string
		make func() *spiffebundle.Bundle
	}{
		{"everything", func() *spiffebundle.Bundle {
			sb := spiffebundle.FromX509Authorities(td, append(a.Roots(), b.Roots()...))
			sb.SetJWTAuthorities(keys)
			sb.SetRefreshHint(5 * time.Minute)
			sb.SetSequenceNumber(42)
			return sb
		}},
		{"x509 only, sequence 0", func() *spiffebundle.Bundle {
			sb := spiffebundle.FromX509Authorities(td, a.Roots())
			sb.SetSequenceNumber(0)
			return sb
		}},
		{"jwt only", func() *spiffebundle.Bundle {
			sb := spiffebundle.New(td)
			sb.SetJWTAuthorities(keys)
			sb.SetSequenceNumber(1)
			return sb
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.make()
			pb, err := ToProto(want)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := proto.Marshal(pb)
			if err != nil {
				t.Fatal(err)
			}
			var back typesv1.Bundle
			if err := proto.Unmarshal(wire, &back); err != nil {
				t.Fatal(err)
			}
			got, err := FromProto(&back)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(want) {
				t.Fatalf("round trip changed the bundle:\n got %+v\nwant %+v", got, want)
			}
			again, err := ToProto(got)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(again, pb) {
				t.Fatalf("message not stable:\n got %v\nwant %v", again, pb)
			}
		})
	}
}

func TestToProto(t *testing.T) {
	a := testca.New(t, td)
	keys := jwtKeys(t)
	sb := spiffebundle.FromX509Authorities(td, a.Roots())
	sb.SetJWTAuthorities(keys)
	sb.SetRefreshHint(90 * time.Second)
	sb.SetSequenceNumber(3)
	pb, err := ToProto(sb)
	if err != nil {
		t.Fatal(err)
	}
	want := &typesv1.Bundle{
		TrustDomain:     "example.org",
		X509Authorities: [][]byte{a.Roots()[0].Raw},
		JwtAuthorities: []*typesv1.JWTAuthority{
			{KeyId: "kid-ec", PublicKey: pkix(t, keys["kid-ec"])},
			{KeyId: "kid-ed", PublicKey: pkix(t, keys["kid-ed"])},
			{KeyId: "kid-rsa", PublicKey: pkix(t, keys["kid-rsa"])},
		},
		RefreshHint: durationpb.New(90 * time.Second),
		Sequence:    3,
	}
	if !proto.Equal(pb, want) {
		t.Fatalf("got %v\nwant %v", pb, want)
	}

	// No refresh hint, no sequence number: both unset/zero.
	pb, err = ToProto(spiffebundle.New(td))
	if err != nil {
		t.Fatal(err)
	}
	if pb.GetRefreshHint() != nil || pb.GetSequence() != 0 || len(pb.GetX509Authorities()) != 0 {
		t.Fatalf("empty bundle: %v", pb)
	}
}

func TestFromProto(t *testing.T) {
	a := testca.New(t, td)
	ec := jwtKeys(t)["kid-ec"]
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root := a.Roots()[0].Raw
	tests := []struct {
		name    string
		pb      *typesv1.Bundle
		wantErr string
		check   func(t *testing.T, b *spiffebundle.Bundle)
	}{
		{name: "keeps kid, hint and sequence", pb: &typesv1.Bundle{
			TrustDomain: "example.org", X509Authorities: [][]byte{root},
			JwtAuthorities: []*typesv1.JWTAuthority{{KeyId: "k1", PublicKey: pkix(t, ec)}},
			RefreshHint:    durationpb.New(time.Minute), Sequence: 9,
		}, check: func(t *testing.T, b *spiffebundle.Bundle) {
			if _, ok := b.FindJWTAuthority("k1"); !ok {
				t.Error("jwt key k1 missing")
			}
			if h, ok := b.RefreshHint(); !ok || h != time.Minute {
				t.Errorf("refresh hint %v %v", h, ok)
			}
			if n, ok := b.SequenceNumber(); !ok || n != 9 {
				t.Errorf("sequence %v %v", n, ok)
			}
			if len(b.X509Authorities()) != 1 || b.TrustDomain() != td {
				t.Errorf("bundle %+v", b)
			}
		}},
		{name: "zero or negative refresh hint is unset", pb: &typesv1.Bundle{
			TrustDomain: "example.org", RefreshHint: durationpb.New(-time.Minute),
		}, check: func(t *testing.T, b *spiffebundle.Bundle) {
			if _, ok := b.RefreshHint(); ok {
				t.Error("refresh hint set")
			}
			if n, ok := b.SequenceNumber(); !ok || n != 0 {
				t.Errorf("sequence %v %v", n, ok)
			}
		}},
		{name: "no trust domain", pb: &typesv1.Bundle{}, wantErr: "bundle trust domain"},
		{name: "bad trust domain", pb: &typesv1.Bundle{TrustDomain: "Example.org"}, wantErr: "bundle trust domain"},
		{name: "bad certificate", pb: &typesv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{{1, 2}}}, wantErr: "x509 authority"},
		{name: "certificate with trailing bytes", pb: &typesv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{append(root[:len(root):len(root)], 0)}}, wantErr: "x509 authority"},
		{name: "bad jwt key", pb: &typesv1.Bundle{TrustDomain: "example.org", JwtAuthorities: []*typesv1.JWTAuthority{{KeyId: "k", PublicKey: []byte{1}}}}, wantErr: `jwt authority "k"`},
		{name: "jwt key that cannot sign", pb: &typesv1.Bundle{TrustDomain: "example.org", JwtAuthorities: []*typesv1.JWTAuthority{{KeyId: "k", PublicKey: pkix(t, x25519.PublicKey())}}}, wantErr: "not a JWT signing key"},
		{name: "jwt key without kid", pb: &typesv1.Bundle{TrustDomain: "example.org", JwtAuthorities: []*typesv1.JWTAuthority{{PublicKey: pkix(t, ec)}}}, wantErr: "keyID cannot be empty"},
		{name: "nil message", pb: nil, wantErr: "bundle trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := FromProto(tt.pb)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, b)
		})
	}
}
