package federation_test

import (
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/federation"
	"github.com/sigilhq/sigil/internal/testca"
)

// FuzzParseFederatedBundle feeds the parser of a peer's bundle document
// arbitrary bytes: it must never panic, and whatever it accepts must
// round-trip through the store's form.
func FuzzParseFederatedBundle(f *testing.F) {
	ca := testca.New(f, peer)
	good, err := spiffeBundleOf(ca, 5, time.Minute).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"keys":[],"spiffe_sequence":1,"spiffe_refresh_hint":60}`))
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kty":"EC","kid":"k","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := federation.ParseBundle(peer, data)
		if err != nil {
			return
		}
		if len(b.X509Authorities()) == 0 {
			t.Fatalf("accepted a bundle without x509 authorities: %q", data)
		}
		if _, err := federation.ToStore(b); err != nil {
			t.Fatalf("accepted bundle does not convert: %v", err)
		}
	})
}
