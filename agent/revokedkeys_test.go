package agent_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/svidstore"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/internal/sigilid"
	"github.com/sigilhq/sigil/internal/workload"
)

// fakeCA serves TLS as the CA's SPIFFE ID with a certificate signed by
// signer (a copy of a CA key) under issuer; it counts the handshakes a
// client completed.
func fakeCA(t *testing.T, issuer *x509.Certificate, signer crypto.Signer) (addr string, handshakes *atomic.Int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(sigilid.CA(td).String())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: issuer.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der, issuer.Raw}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	handshakes = &atomic.Int64{}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			if c.(*tls.Conn).Handshake() == nil {
				handshakes.Add(1)
			}
			c.Close()
		}
	}()
	return lis.Addr().String(), handshakes
}

// Attack: revoke K1, then make the agent fall back to its bootstrap roots
// (its identity is gone, as after an eviction) and serve it a CA
// certificate signed by a copy of K1. The upstream root still chains K1;
// the persisted revoked key IDs make the agent refuse it.
func TestRevokedKeyRefusedUnderBootstrapRoots(t *testing.T) {
	ctx := context.Background()
	tc := newTestCA(t, time.Hour)
	pop, agentID := x509popNode(t, tc)
	tc.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	dir := filepath.Join(t.TempDir(), "agent")
	a, _, stop, _ := runAgent(t, tc, dir, "", func(c *agent.Config) { c.Attestor = pop })
	sub := a.Cache().Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	first := waitFor(t, sub, "the web SVID", hasID("spiffe://example.org/web")).Identities[0].SVID
	k1Cert := first.Certificates[1]
	k1ID := svidstore.KeyID(k1Cert)
	// The attacker's copy of K1's private key, taken before the CA
	// destroys it.
	k1Key, err := tc.keys.Signer(ctx, "x509-1")
	if err != nil {
		t.Fatal(err)
	}
	if !k1Key.Public().(*ecdsa.PublicKey).Equal(k1Cert.PublicKey) {
		t.Fatal("key x509-1 is not the key of the web SVID's issuer")
	}

	if _, err := tc.ca.Prepare(ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ca.Activate(ctx, ca.X509); err != nil {
		t.Fatal(err)
	}
	st, err := tc.ca.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var k1 string
	for _, k := range st.Keys {
		if k.Kind == ca.X509 && k.State != ca.Active {
			k1 = k.ID
		}
	}
	if err := tc.ca.Taint(ctx, ca.X509, k1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, sub, "a web SVID from the new key", func(u workload.Update) bool {
		return len(u.Identities) == 1 && svidstore.KeyID(u.Identities[0].SVID.Certificates[1]) != k1ID
	})
	if err := tc.ca.Revoke(ctx, ca.X509, k1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ids, err := svidstore.LoadRevokedKeys(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) == 1 && ids[0] == k1ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent persisted revoked keys %v, want [%s]", ids, k1ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()

	addr, handshakes := fakeCA(t, k1Cert, k1Key)
	// Control: the bootstrap roots chain K1, so without the revoked list
	// a client verifying by them accepts the fake CA.
	conn, err := tls.Dial("tcp", addr, tlsconfig.TLSClientConfig(rootsOnly(tc.roots), tlsconfig.AuthorizeID(sigilid.CA(td))))
	if err != nil {
		t.Fatalf("the bootstrap roots do not chain K1; the attack shows nothing: %v", err)
	}
	conn.Close()
	for end := time.Now().Add(5 * time.Second); handshakes.Load() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the fake CA counted no handshake")
		}
	}
	handshakes.Store(0)

	// The agent kept its identity, but its bundle lacks K1 (revoked): it
	// falls back to its bootstrap roots for the CA's certificate
	// (catrust.go), which chain K1, and the revoked list refuses it.
	logs := &lockedBuffer{}
	kept, err := agent.New(agent.Config{
		TrustDomain: td, ServerAddress: addr, DataDir: dir, BootstrapBundle: tc.roots, Attestor: pop,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	kdone := make(chan error, 1)
	go func() { kdone <- kept.Run(kctx) }()
	for end := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "revoked CA key "+k1ID); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			kcancel()
			t.Fatalf("the agent with its identity never refused the fake CA for revoked K1:\n%s", logs.String())
		}
	}
	kcancel()
	if err := <-kdone; err != nil {
		t.Fatalf("agent Run: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // the server counts after the client returns
	if n := handshakes.Load(); n != 0 {
		t.Fatalf("the agent with its identity completed %d handshakes with the fake CA", n)
	}
	if strings.Contains(logs.String(), "verified the CA by its bootstrap roots") {
		t.Fatalf("the agent logged a fallback to a revoked key:\n%s", logs.String())
	}

	// The agent lost its identity (evicted; a new disk with the old data
	// dir's files restored): it attests again by its bootstrap roots.
	if err := os.Remove(filepath.Join(dir, svidstore.FileName)); err != nil {
		t.Fatal(err)
	}
	b, err := agent.New(agent.Config{
		TrustDomain: td, ServerAddress: addr, DataDir: dir, BootstrapBundle: tc.roots, Attestor: pop,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = b.Run(rctx)
	if err == nil || !strings.Contains(err.Error(), "revoked CA key "+k1ID) {
		t.Fatalf("agent Run against a CA certificate signed by revoked K1 = %v, want a refusal naming the revoked key", err)
	}
	time.Sleep(200 * time.Millisecond) // the server counts after the client returns
	if n := handshakes.Load(); n != 0 {
		t.Fatalf("the agent completed %d handshakes with the fake CA", n)
	}
	if _, err := svidstore.Load(dir, td); err == nil {
		t.Fatal("the agent installed an identity")
	}
}

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func rootsOnly(roots []*x509.Certificate) x509bundle.Source {
	return x509bundle.FromX509Authorities(td, roots)
}
