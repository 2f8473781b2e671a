package decisionlog

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Identity gives the key and certificate chain checkpoints are signed
// with. It is asked again for every checkpoint, so a rotating source (the
// authz X509-SVID from the Workload API, x509svid.Source) is followed.
type Identity interface {
	GetX509SVID() (*x509svid.SVID, error)
}

// StaticIdentity signs with one key and chain (leaf first) that never
// change.
func StaticIdentity(key crypto.Signer, chain []*x509.Certificate) Identity {
	return staticIdentity{svid: &x509svid.SVID{Certificates: chain, PrivateKey: key}}
}

type staticIdentity struct{ svid *x509svid.SVID }

func (s staticIdentity) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

// Checkpoint is a signed statement that the chain's line Seq hashes to
// Head. Checkpoints form their own chain (N counts from 1; Prev is the hash
// of the previous checkpoint line) and are written to a separate sink, so
// they can be shipped apart from the log: whoever can rewrite the log
// cannot forge them.
type Checkpoint struct {
	N     uint64    `json:"n"`
	Seq   uint64    `json:"seq"`
	Head  string    `json:"head"`
	Time  time.Time `json:"time"`
	Prev  string    `json:"prev"`
	Chain [][]byte  `json:"chain"` // DER, leaf first
	Sig   []byte    `json:"sig"`
}

// checkpointDomain separates checkpoint signatures from any other use of
// the authz key.
const checkpointDomain = "sigil decision log checkpoint v1\n"

// signedBytes is what a checkpoint's signature covers.
func (c *Checkpoint) signedBytes() []byte {
	b := make([]byte, 0, 256)
	b = append(b, checkpointDomain...)
	b = strconv.AppendUint(append(b, "n="...), c.N, 10)
	b = strconv.AppendUint(append(b, "\nseq="...), c.Seq, 10)
	b = append(append(b, "\nhead="...), c.Head...)
	b = append(append(b, "\ntime="...), c.Time.UTC().Format(time.RFC3339Nano)...)
	b = append(append(b, "\nprev="...), c.Prev...)
	return append(b, '\n')
}

// sign fills Chain and Sig from id.
func (c *Checkpoint) sign(id Identity) error {
	svid, err := id.GetX509SVID()
	if err != nil {
		return fmt.Errorf("get checkpoint signer: %w", err)
	}
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return errors.New("checkpoint signer has no certificate or key")
	}
	msg := c.signedBytes()
	var sig []byte
	if _, ok := svid.PrivateKey.Public().(ed25519.PublicKey); ok {
		sig, err = svid.PrivateKey.Sign(rand.Reader, msg, crypto.Hash(0))
	} else {
		sum := sha256.Sum256(msg)
		sig, err = svid.PrivateKey.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		return fmt.Errorf("sign checkpoint: %w", err)
	}
	c.Chain = c.Chain[:0]
	for _, cert := range svid.Certificates {
		c.Chain = append(c.Chain, cert.Raw)
	}
	c.Sig = sig
	return nil
}

// marshal is the checkpoint's line.
func (c *Checkpoint) marshal() ([]byte, error) {
	c.Time = c.Time.UTC()
	return json.Marshal(c)
}

// parseCheckpoint decodes a checkpoint line strictly.
func parseCheckpoint(line []byte) (Checkpoint, error) {
	var c Checkpoint
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("decode checkpoint: %w", err)
	}
	if dec.More() {
		return c, errors.New("decode checkpoint: trailing data")
	}
	if c.N == 0 || c.Seq == 0 || len(c.Head) != 64 || len(c.Chain) == 0 || len(c.Sig) == 0 {
		return c, errors.New("checkpoint lacks n, seq, head, chain or signature")
	}
	return c, nil
}

// verify checks the signature and that the signer chains to roots at the
// checkpoint's own time (SVIDs live an hour; the checkpoint was signed
// while its certificate was valid). It returns the signer's SPIFFE ID.
func (c *Checkpoint) verify(roots *x509.CertPool) (string, error) {
	certs := make([]*x509.Certificate, 0, len(c.Chain))
	for i, der := range c.Chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return "", fmt.Errorf("signer certificate %d: %w", i, err)
		}
		certs = append(certs, cert)
	}
	leaf := certs[0]
	var alg x509.SignatureAlgorithm
	switch leaf.PublicKeyAlgorithm {
	case x509.ECDSA:
		alg = x509.ECDSAWithSHA256
	case x509.RSA:
		alg = x509.SHA256WithRSA
	case x509.Ed25519:
		alg = x509.PureEd25519
	default:
		return "", fmt.Errorf("signer key type %v not supported", leaf.PublicKeyAlgorithm)
	}
	if err := leaf.CheckSignature(alg, c.signedBytes(), c.Sig); err != nil {
		return "", fmt.Errorf("signature does not verify: %w", err)
	}
	if roots == nil {
		return "", errors.New("no trust bundle to check the signer against")
	}
	inter := x509.NewCertPool()
	for _, cert := range certs[1:] {
		inter.AddCert(cert)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: c.Time,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return "", fmt.Errorf("signer does not chain to the trust bundle: %w", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].Scheme != "spiffe" {
		return "", errors.New("signer certificate carries no single SPIFFE ID")
	}
	return leaf.URIs[0].String(), nil
}
