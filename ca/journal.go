package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// journalDoc is the persisted form of the CA's keys: what survives a
// restart. Private keys live in the key manager under KeyName.
type journalDoc struct {
	Version int          `json:"version"`
	NextSeq int          `json:"next_seq"`
	X509    []x509Record `json:"x509"`
	JWT     []jwtRecord  `json:"jwt"`
	// RevokedX509 lists the IDs of X.509 CA keys revoked by an operator, so
	// that agents and authz can deny what they signed.
	RevokedX509 []string `json:"revoked_x509,omitempty"`
	// Rekey is the re-key in progress after a leaf revocation (nil: none);
	// LastRekey the last one finished. See rekey.go.
	Rekey     *rekeyRecord `json:"rekey,omitempty"`
	LastRekey *rekeyRecord `json:"last_rekey,omitempty"`
	// Roots is the root journal: every upstream root the CA's keys chain
	// to, and the last few that left. See rootrot.go.
	Roots []rootRecord `json:"roots,omitempty"`
}

type x509Record struct {
	ID      string   `json:"id"`
	KeyName string   `json:"key_name"`
	Chain   [][]byte `json:"chain"` // DER; Chain[0] is this CA's certificate
	State   KeyState `json:"state"`
	Tainted bool     `json:"tainted,omitempty"`
	// ActivatedAt is when the key began signing (zero: prepared, or
	// activated by a sigil that did not record it; then its notBefore
	// stands in).
	ActivatedAt time.Time `json:"activated_at,omitzero"`
}

type jwtRecord struct {
	ID        string    `json:"id"`
	KeyName   string    `json:"key_name"`
	PublicKey []byte    `json:"public_key"` // PKIX DER
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	State     KeyState  `json:"state"`
	Tainted   bool      `json:"tainted,omitempty"`
}

const journalVersion = 1

func decodeJournal(b []byte) (journalDoc, error) {
	var j journalDoc
	if err := json.Unmarshal(b, &j); err != nil {
		return journalDoc{}, fmt.Errorf("decode ca journal: %w", err)
	}
	if j.Version != journalVersion {
		return journalDoc{}, fmt.Errorf("ca journal version %d, this sigil reads version %d", j.Version, journalVersion)
	}
	return j, nil
}

func (j journalDoc) encode() ([]byte, error) {
	j.Version = journalVersion
	return json.Marshal(j)
}

// clone copies the journal deeply enough that edits to the copy's slices
// leave the original alone.
func (j journalDoc) clone() journalDoc {
	c := j
	c.X509 = append([]x509Record(nil), j.X509...)
	c.JWT = append([]jwtRecord(nil), j.JWT...)
	c.RevokedX509 = append([]string(nil), j.RevokedX509...)
	c.Rekey = j.Rekey.clone()
	c.LastRekey = j.LastRekey.clone()
	c.Roots = slices.Clone(j.Roots)
	return c
}

// x509Slot is a loaded X.509 CA key, ready to sign.
type x509Slot struct {
	rec    x509Record
	cert   *x509.Certificate
	chain  []*x509.Certificate // cert and the upstream intermediates above it
	signer crypto.Signer
	// self trusts only this CA certificate; the post-sign check verifies
	// every SVID against it.
	self *x509bundle.Bundle
}

func (s *x509Slot) status() KeyStatus {
	return KeyStatus{Kind: X509, ID: s.rec.ID, State: s.rec.State, NotBefore: s.cert.NotBefore, NotAfter: s.cert.NotAfter, Tainted: s.rec.Tainted}
}

// jwtSlot is a loaded JWT signing key.
type jwtSlot struct {
	rec    jwtRecord
	public crypto.PublicKey
	signer crypto.Signer
}

func (s *jwtSlot) status() KeyStatus {
	return KeyStatus{Kind: JWT, ID: s.rec.ID, State: s.rec.State, NotBefore: s.rec.NotBefore, NotAfter: s.rec.NotAfter, Tainted: s.rec.Tainted}
}

// state is an immutable snapshot of the loaded journal, swapped atomically
// so that signing never takes a lock.
type state struct {
	doc        journalDoc
	x509       []*x509Slot
	jwt        []*jwtSlot
	activeX509 *x509Slot
	activeJWT  *jwtSlot
}

func (st *state) find(kind KeyKind, state KeyState) (x *x509Slot, j *jwtSlot) {
	if st == nil {
		return nil, nil
	}
	if kind == X509 {
		for _, s := range st.x509 {
			if s.rec.State == state {
				return s, nil
			}
		}
		return nil, nil
	}
	for _, s := range st.jwt {
		if s.rec.State == state {
			return nil, s
		}
	}
	return nil, nil
}

// keyIDForCert is the X.509 key ID: the hex SHA-256 of the certificate's
// SubjectPublicKeyInfo.
func keyIDForCert(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

func newSelfBundle(td spiffeid.TrustDomain, cert *x509.Certificate) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{cert})
}
