package keys_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/sigilhq/sigil/ca/keys"
)

// BenchmarkSign measures one ec-p256 signature with each manager's signer,
// one caller at a time and with GOMAXPROCS callers at once.
func BenchmarkSign(b *testing.B) {
	digest := sha256.Sum256([]byte("sigil"))
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			m, _ := be.open(b)
			s, err := m.GenerateKey(context.Background(), "bench", keys.ECP256)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
