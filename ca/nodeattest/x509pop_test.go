package nodeattest_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	agentattest "github.com/sigilhq/sigil/agent/nodeattest"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// answerWith returns a challenge function answered by the agent-side
// attestor, recording the nonce.
func answerWith(a agentattest.Attestor, nonces *[][]byte) nodeattest.Challenge {
	return func(_ context.Context, nonce []byte) ([]byte, error) {
		*nonces = append(*nonces, nonce)
		return a.Answer(nonce)
	}
}

func TestX509PoPKeyTypes(t *testing.T) {
	pki := testca.New(t, spiffeid.RequireTrustDomainFromString("corp.example"))
	now := time.Now()
	att, err := nodeattest.NewX509PoP(nodeattest.X509PoPConfig{TrustDomain: td, Roots: pki.Roots(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		t.Run(kind, func(t *testing.T) {
			key := newKey(t, kind)
			chain := nodeCert(t, pki, key, "node-1.corp", now.Add(-time.Hour), now.Add(time.Hour), "node-1.corp.example")
			client, err := agentattest.NewX509PoP(chain, key)
			if err != nil {
				t.Fatal(err)
			}
			var nonces [][]byte
			res, err := att.Attest(context.Background(), client.Params(), answerWith(client, &nonces))
			if err != nil {
				t.Fatalf("attest: %v", err)
			}
			if len(nonces) != 1 || len(nonces[0]) < 32 {
				t.Fatalf("want one nonce of at least 32 bytes, got %d nonces", len(nonces))
			}
			fp := sha256.Sum256(chain[0].Raw)
			if want := "spiffe://example.org/sigil/agent/x509pop/" + hex.EncodeToString(fp[:]); res.AgentID.String() != want {
				t.Fatalf("agent id %s, want %s", res.AgentID, want)
			}
			got := selector.Strings(res.Selectors)
			rootFP := sha256.Sum256(pki.Roots()[0].Raw)
			interFP := sha256.Sum256(pki.Certificates()[0].Raw)
			for _, want := range []string{
				"x509pop:subject:cn:node-1.corp",
				"x509pop:san:dns:node-1.corp.example",
				"x509pop:ca:fingerprint:" + hex.EncodeToString(rootFP[:]),
				"x509pop:ca:fingerprint:" + hex.EncodeToString(interFP[:]),
				"x509pop:serialnumber:" + chain[0].SerialNumber.Text(16),
			} {
				if !slices.Contains(got, want) {
					t.Errorf("selectors %v lack %s", got, want)
				}
			}
		})
	}
}

func TestX509PoPRefused(t *testing.T) {
	pki := testca.New(t, spiffeid.RequireTrustDomainFromString("corp.example"))
	other := testca.New(t, spiffeid.RequireTrustDomainFromString("evil.example"))
	now := time.Now()
	att, err := nodeattest.NewX509PoP(nodeattest.X509PoPConfig{TrustDomain: td, Roots: pki.Roots(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t, "p256")
	good := nodeCert(t, pki, key, "node", now.Add(-time.Hour), now.Add(time.Hour))
	goodClient, err := agentattest.NewX509PoP(good, key)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := newKey(t, "p256")
	impostor, err := agentattest.NewX509PoP(nodeCert(t, pki, otherKey, "node", now.Add(-time.Hour), now.Add(time.Hour)), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	untrustedKey := newKey(t, "p256")
	untrusted, err := agentattest.NewX509PoP(nodeCert(t, other, untrustedKey, "node", now.Add(-time.Hour), now.Add(time.Hour)), untrustedKey)
	if err != nil {
		t.Fatal(err)
	}
	expiredKey := newKey(t, "p256")
	expired, err := agentattest.NewX509PoP(nodeCert(t, pki, expiredKey, "node", now.Add(-2*time.Hour), now.Add(-time.Hour)), expiredKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		params    *nodev1.AttestParams
		challenge nodeattest.Challenge
		want      error
		msg       string
	}{
		{name: "wrong key answers the challenge", params: goodClient.Params(), challenge: answerWith(impostor, new([][]byte)), want: nodeattest.ErrRefused, msg: "not a signature by the certificate's key"},
		{name: "untrusted root", params: untrusted.Params(), challenge: answerWith(untrusted, new([][]byte)), want: nodeattest.ErrRefused, msg: "does not chain to a trusted root"},
		{name: "expired certificate", params: expired.Params(), challenge: answerWith(expired, new([][]byte)), want: nodeattest.ErrRefused, msg: "does not chain"},
		{name: "leaf is a CA", params: &nodev1.AttestParams{Type: "x509pop", Certificates: [][]byte{pki.Certificates()[0].Raw}}, want: nodeattest.ErrRefused, msg: "is a CA"},
		{name: "no certificates", params: &nodev1.AttestParams{Type: "x509pop"}, want: nodeattest.ErrInvalid, msg: "certificates are required"},
		{name: "garbage certificate", params: &nodev1.AttestParams{Type: "x509pop", Certificates: [][]byte{[]byte("nope")}}, want: nodeattest.ErrInvalid, msg: "certificate 0"},
		{name: "token given", params: &nodev1.AttestParams{Type: "x509pop", Token: "x", Certificates: [][]byte{good[0].Raw}}, want: nodeattest.ErrInvalid, msg: "token is not used"},
		{name: "empty answer", params: goodClient.Params(), challenge: func(context.Context, []byte) ([]byte, error) { return nil, nil }, want: nodeattest.ErrRefused, msg: "empty or too long"},
		{name: "too many certificates", params: &nodev1.AttestParams{Type: "x509pop", Certificates: make([][]byte, 9)}, want: nodeattest.ErrInvalid, msg: "at most 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := att.Attest(context.Background(), tt.params, tt.challenge)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestLoadRoots(t *testing.T) {
	pki := testca.New(t, spiffeid.RequireTrustDomainFromString("corp.example"))
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leafKey := newKey(t, "p256")
	leaf := nodeCert(t, pki, leafKey, "n", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))[0]
	tests := []struct {
		name, path, wantErr string
		want                int
	}{
		{name: "root and intermediate", path: write("ok.pem", testca.CertsPEM(append(pki.Roots(), pki.Certificates()...))), want: 2},
		{name: "not a CA", path: write("leaf.pem", testca.CertsPEM([]*x509.Certificate{leaf})), wantErr: "is not a CA"},
		{name: "empty", path: write("empty.pem", nil), wantErr: "empty.pem: no PEM block"},
		{name: "garbage", path: write("garbage.pem", []byte("hello")), wantErr: "garbage.pem: no PEM block"},
		{name: "missing", path: filepath.Join(dir, "nope.pem"), wantErr: "x509pop roots: open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots, err := nodeattest.LoadRoots(tt.path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(roots) != tt.want {
				t.Fatalf("got %d roots, err %v; want %d", len(roots), err, tt.want)
			}
		})
	}
}
