package nodeattest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/testca"
)

// tokenSet is a fuzzing stand-in for the store: every token is unknown.
type tokenSet struct{}

func (tokenSet) ConsumeJoinToken(context.Context, string, time.Time) (store.JoinToken, error) {
	return store.JoinToken{}, store.ErrNotFound
}

// FuzzAttestParams feeds random AttestParams (as wire bytes) and random
// challenge answers to both attestors: they must never panic, never accept,
// and only fail with ErrInvalid or ErrRefused.
func FuzzAttestParams(f *testing.F) {
	pki := testca.New(f, spiffeid.RequireTrustDomainFromString("corp.example"))
	now := time.Now()
	key := newKey(f, "p256")
	chain := nodeCert(f, pki, key, "node", now.Add(-time.Hour), now.Add(time.Hour))
	seed, _ := proto.Marshal(&nodev1.AttestParams{Type: "x509pop", Certificates: [][]byte{chain[0].Raw, chain[1].Raw}})
	f.Add(seed, []byte("sig"))
	seed, _ = proto.Marshal(&nodev1.AttestParams{Type: "join_token", Token: "abc"})
	f.Add(seed, []byte{})
	f.Add([]byte{0x1a, 0x03, 0x30, 0x01, 0x02}, []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01})
	x, err := nodeattest.NewX509PoP(nodeattest.X509PoPConfig{TrustDomain: td, Roots: pki.Roots(), Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	j, err := nodeattest.NewJoinToken(td, tokenSet{}, func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, wire, answer []byte) {
		var p nodev1.AttestParams
		if proto.Unmarshal(wire, &p) != nil {
			return
		}
		challenge := func(context.Context, []byte) ([]byte, error) { return answer, nil }
		for _, a := range []nodeattest.Attestor{x, j} {
			_, err := a.Attest(context.Background(), &p, challenge)
			if err == nil {
				t.Fatalf("%s accepted random params", a.Type())
			}
			if !errors.Is(err, nodeattest.ErrInvalid) && !errors.Is(err, nodeattest.ErrRefused) {
				t.Fatalf("%s: unexpected error class: %v", a.Type(), err)
			}
		}
	})
}
