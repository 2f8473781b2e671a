package nodeattest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
)

// Attestor is one way of proving the node.
type Attestor interface {
	// Params returns what the agent sends first (without the CSR).
	Params() *nodev1.AttestParams
	// Answer returns the response to a challenge from the CA; methods
	// without a challenge return an error.
	Answer(challenge []byte) ([]byte, error)
}

// JoinToken attests with a one-time join token (sigil token create).
type JoinToken struct {
	Token string
}

// Params implements Attestor.
func (j JoinToken) Params() *nodev1.AttestParams {
	return &nodev1.AttestParams{Type: "join_token", Token: j.Token}
}

// Answer implements Attestor: join tokens have no challenge.
func (j JoinToken) Answer([]byte) ([]byte, error) {
	return nil, errors.New("join_token: the CA sent a challenge, but this method has none")
}

// X509PoP attests by proving possession of the key of a certificate that
// chains to the CA's configured x509pop roots.
type X509PoP struct {
	chain [][]byte // DER, leaf first
	key   crypto.Signer
}

// LoadX509PoP reads a PEM certificate file (leaf first, then any
// intermediates) and its PEM private key file (PKCS #8, SEC 1 or PKCS #1).
func LoadX509PoP(certFile, keyFile string) (*X509PoP, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("x509pop: load %s and %s: %w", certFile, keyFile, err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("x509pop: key in %s cannot sign", keyFile)
	}
	return &X509PoP{chain: pair.Certificate, key: key}, nil
}

// NewX509PoP uses chain (leaf first) and the leaf's key.
func NewX509PoP(chain []*x509.Certificate, key crypto.Signer) (*X509PoP, error) {
	if len(chain) == 0 || key == nil {
		return nil, errors.New("x509pop: a certificate chain and its key are required")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, errors.New("x509pop: the key does not match the leaf certificate")
	}
	der := make([][]byte, len(chain))
	for i, c := range chain {
		der[i] = c.Raw
	}
	return &X509PoP{chain: der, key: key}, nil
}

// Params implements Attestor.
func (x *X509PoP) Params() *nodev1.AttestParams {
	return &nodev1.AttestParams{Type: "x509pop", Certificates: x.chain}
}

// Answer signs the challenge: SHA-256(nonce) with ECDSA (ASN.1) or RSA
// (PKCS #1 v1.5); the nonce itself with Ed25519.
func (x *X509PoP) Answer(nonce []byte) ([]byte, error) {
	if len(nonce) < 16 || len(nonce) > 1024 {
		return nil, fmt.Errorf("x509pop: challenge of %d bytes, want 16 to 1024", len(nonce))
	}
	switch x.key.Public().(type) {
	case ed25519.PublicKey:
		return x.key.Sign(rand.Reader, nonce, crypto.Hash(0))
	case *ecdsa.PublicKey, *rsa.PublicKey:
		digest := sha256.Sum256(nonce)
		return x.key.Sign(rand.Reader, digest[:], crypto.SHA256)
	default:
		return nil, fmt.Errorf("x509pop: key type %T is not supported", x.key.Public())
	}
}

// Attest runs the Attest stream: sends a's parameters with csrDER (a DER
// CSR for the agent's SVID key; its names are ignored, the CA sets the
// agent ID), answers challenges, and returns the agent's SVID. The caller
// must verify the CA's server certificate against its bootstrap bundle
// when dialing, and should check the returned chain against the bundle.
func Attest(ctx context.Context, client nodev1.NodeClient, a Attestor, csrDER []byte) (*nodev1.AgentSVID, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Attest(ctx)
	if err != nil {
		return nil, fmt.Errorf("attest: open stream: %w", err)
	}
	var p *nodev1.AttestParams
	if l, ok := a.(ParamsLoader); ok {
		if p, err = l.LoadParams(); err != nil {
			return nil, err
		}
	} else {
		p = a.Params()
	}
	p.Csr = csrDER
	if err := stream.Send(&nodev1.AttestRequest{Step: &nodev1.AttestRequest_Params{Params: p}}); err != nil {
		return nil, fmt.Errorf("attest %s: send params: %w", p.GetType(), recvErr(stream, err))
	}
	for range 4 {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("attest %s: %w", p.GetType(), err)
		}
		if r := resp.GetResult(); r != nil {
			_ = stream.CloseSend()
			return r, nil
		}
		ch := resp.GetChallenge()
		if ch == nil {
			return nil, fmt.Errorf("attest %s: the CA sent neither a challenge nor a result", p.GetType())
		}
		ans, err := a.Answer(ch)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&nodev1.AttestRequest{Step: &nodev1.AttestRequest_ChallengeResponse{ChallengeResponse: ans}}); err != nil {
			return nil, fmt.Errorf("attest %s: send challenge response: %w", p.GetType(), recvErr(stream, err))
		}
	}
	return nil, fmt.Errorf("attest %s: too many challenges from the CA", p.GetType())
}

// recvErr turns an io.EOF from Send into the status the server ended with.
func recvErr(stream nodev1.Node_AttestClient, sendErr error) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return sendErr
}
