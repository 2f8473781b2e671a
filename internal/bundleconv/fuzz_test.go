package bundleconv

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"google.golang.org/protobuf/proto"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/testca"
)

// FuzzFromProto decodes arbitrary bytes as a Bundle message, as the agent
// does with what the CA sends, into go-spiffe's type. It must never panic;
// a bundle it accepts must survive a round trip unchanged and its JWT half
// must marshal (the Workload API serves it to workloads).
func FuzzFromProto(f *testing.F) {
	ca := testca.New(f, td)
	sb := spiffebundle.FromX509Authorities(td, ca.Roots())
	sb.SetJWTAuthorities(jwtKeys(f))
	sb.SetRefreshHint(time.Minute)
	sb.SetSequenceNumber(5)
	seed := func(pb *typesv1.Bundle) {
		b, err := proto.Marshal(pb)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	full, err := ToProto(sb)
	if err != nil {
		f.Fatal(err)
	}
	seed(full)
	seed(&typesv1.Bundle{TrustDomain: "example.org"})
	seed(&typesv1.Bundle{TrustDomain: "example.org", JwtAuthorities: []*typesv1.JWTAuthority{{KeyId: "k", PublicKey: []byte{0x30, 0}}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var pb typesv1.Bundle
		if err := proto.Unmarshal(data, &pb); err != nil {
			return
		}
		b, err := FromProto(&pb)
		if err != nil {
			return
		}
		if _, err := b.JWTBundle().Marshal(); err != nil {
			t.Fatalf("accepted a bundle whose JWT keys do not marshal: %v", err)
		}
		again, err := ToProto(b)
		if err != nil {
			t.Fatalf("accepted a bundle that does not convert back: %v", err)
		}
		b2, err := FromProto(again)
		if err != nil {
			t.Fatalf("refused its own output: %v", err)
		}
		if !b2.Equal(b) {
			t.Fatalf("round trip changed the bundle:\n got %+v\nwant %+v", b2, b)
		}
	})
}
