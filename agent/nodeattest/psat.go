package nodeattest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
)

// DefaultPSATTokenPath is where the agent's DaemonSet mounts its projected
// service account token (audience sigil).
const DefaultPSATTokenPath = "/var/run/secrets/tokens/sigil-agent"

// MaxPSATTokenLen bounds the token file the agent reads and sends; the CA
// applies the same bound.
const MaxPSATTokenLen = 16 << 10

// ParamsLoader is an Attestor whose parameters are read afresh for each
// attestation and can fail to be read (a rotated token file). Attest uses
// LoadParams instead of Params when the attestor has it.
type ParamsLoader interface {
	LoadParams() (*nodev1.AttestParams, error)
}

// K8sPSAT attests with the pod's projected service account token (PSAT).
// The kubelet rotates the token file, so it is read again on every
// attestation; the agent may attest again with it at any time.
type K8sPSAT struct {
	// Cluster is the name the CA's config knows this cluster by.
	Cluster string
	// TokenPath is the projected token file; "" means DefaultPSATTokenPath.
	TokenPath string
}

var _ ParamsLoader = K8sPSAT{}

// LoadParams reads the token file and returns the parameters to send.
func (k K8sPSAT) LoadParams() (*nodev1.AttestParams, error) {
	if k.Cluster == "" {
		return nil, errors.New("k8s_psat: cluster name is required")
	}
	path := k.TokenPath
	if path == "" {
		path = DefaultPSATTokenPath
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: read token: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxPSATTokenLen+1))
	if err != nil {
		return nil, fmt.Errorf("k8s_psat: read token %s: %w", path, err)
	}
	tok := bytes.TrimSpace(raw)
	switch {
	case len(raw) > MaxPSATTokenLen:
		return nil, fmt.Errorf("k8s_psat: token file %s is larger than %d bytes", path, MaxPSATTokenLen)
	case len(tok) == 0:
		return nil, fmt.Errorf("k8s_psat: token file %s is empty", path)
	}
	return &nodev1.AttestParams{Type: "k8s_psat", Token: string(tok), Cluster: k.Cluster}, nil
}

// Params implements Attestor. A token file that cannot be read gives
// parameters without a token, which the CA refuses; Attest calls
// LoadParams and reports the read error instead.
func (k K8sPSAT) Params() *nodev1.AttestParams {
	p, err := k.LoadParams()
	if err != nil {
		return &nodev1.AttestParams{Type: "k8s_psat", Cluster: k.Cluster}
	}
	return p
}

// Answer implements Attestor: PSAT has no challenge.
func (k K8sPSAT) Answer([]byte) ([]byte, error) {
	return nil, errors.New("k8s_psat: the CA sent a challenge, but this method has none")
}
