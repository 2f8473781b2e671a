package ca_test

import (
	"crypto/rand"
	"math/big"

	"github.com/sigilhq/sigil/ca/store"
)

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func storeAllAudit() store.AuditFilter { return store.AuditFilter{} }
