package agent_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/internal/envoytest"
)

// Envoy's SDS is served on the same socket as the Workload API, from the
// same cache, to a caller attested by its uid.
func TestSDSOnTheAgentSocket(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	tok := tc.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	tc.entry(t, agentID, "spiffe://example.org/envoy", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.Serve = agent.ServeSocket(agent.SocketConfig{Path: sock, Attestor: att, Register: []func(*grpc.Server, *cache.Cache) error{agent.SDS(att, nil, nil)}})
	})
	waitSocket(t, sock)
	client, err := envoytest.Dial(sock, envoytest.Node("sidecar"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := t.Context()
	stream, err := client.StreamSecrets(ctx, "default", "ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var leaf *x509.Certificate
	deadline := time.Now().Add(30 * time.Second)
	for leaf == nil {
		if time.Now().After(deadline) {
			t.Fatal("no default secret within 30s")
		}
		if _, err := stream.Next(ctx); err != nil {
			t.Fatal(err)
		}
		if s := stream.Secret("default"); s != nil && stream.Secret("ROOTCA") != nil {
			block, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
			if block == nil {
				t.Fatal("default secret holds no PEM certificate")
			}
			if leaf, err = x509.ParseCertificate(block.Bytes); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/envoy" {
		t.Fatalf("default secret is %v, want the caller's SVID spiffe://example.org/envoy", leaf.URIs)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(stream.Secret("ROOTCA").GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("ROOTCA holds no certificates")
	}
	inter := x509.NewCertPool()
	rest := stream.Secret("default").GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && c.IsCA {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("default does not verify against ROOTCA: %v", err)
	}
}
