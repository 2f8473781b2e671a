package revocation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/authz/revocation"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
	"github.com/sigilhq/sigil/sds"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestSetCheck(t *testing.T) {
	ca := testca.New(t, td)
	other := ca.Chain(t, 1) // a second signing key of the same trust domain
	fed := testca.New(t, spiffeid.RequireTrustDomainFromString("fed.example"))
	good := ca.Issue(t, "spiffe://example.org/good").Certificates[0]
	bad := ca.Issue(t, "spiffe://example.org/bad").Certificates[0]
	byOther := other.Issue(t, "spiffe://example.org/other").Certificates[0]
	federated := fed.Issue(t, "spiffe://fed.example/peer").Certificates[0]
	stranger := testca.New(t, td).Issue(t, "spiffe://example.org/stranger").Certificates[0]

	set, err := revocation.NewSet([]*x509.Certificate{ca.Certificates()[0], other.Certificates()[0]}, [][]byte{ca.CRL(t, bad.SerialNumber, big.NewInt(7))})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name string
		set  *revocation.Set
		cert *x509.Certificate
		now  time.Time
		want error
	}{
		{"not revoked", set, good, now, nil},
		{"revoked", set, bad, now, revocation.ErrRevoked},
		{"issuer without a CRL", set, byOther, now, revocation.ErrUnknown},
		{"CRL past nextUpdate", set, good, now.Add(2 * time.Hour), revocation.ErrUnknown},
		{"no set yet", nil, good, now, revocation.ErrUnknown},
		{"issuer not in the bundle, our trust domain", set, stranger, now, revocation.ErrUnknown},
		{"federated trust domain: not checked", set, federated, now, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.set.Check(tc.cert, tc.now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewSetRefuses(t *testing.T) {
	ca := testca.New(t, td)
	stranger := testca.New(t, td)
	auth := []*x509.Certificate{ca.Certificates()[0]}
	tests := []struct {
		name  string
		auths []*x509.Certificate
		crls  [][]byte
	}{
		{"no authorities", nil, nil},
		{"CRL signed by no authority", auth, [][]byte{stranger.CRL(t)}},
		{"CRL that does not parse", auth, [][]byte{[]byte("junk")}},
		{"too many CRLs", auth, make([][]byte, revocation.MaxCRLs+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := revocation.NewSet(tc.auths, tc.crls); err == nil {
				t.Fatal("NewSet accepted it")
			}
		})
	}
}

func TestParseURLEncodedPEM(t *testing.T) {
	ca := testca.New(t, td)
	svid := ca.Issue(t, "spiffe://example.org/w")
	chain := string(testca.CertsPEM(svid.Certificates))
	for name, enc := range map[string]string{
		// What Envoy sends (its urlEncodedPemEncodedPeerCertificate).
		"envoy":       strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(chain),
		"path escape": url.PathEscape(chain),
	} {
		t.Run(name, func(t *testing.T) {
			cert, err := revocation.ParseURLEncodedPEM(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !cert.Equal(svid.Certificates[0]) {
				t.Fatal("not the leaf")
			}
		})
	}
	for name, in := range map[string]string{"empty": "", "bad escape": "%zz", "not PEM": "hello", "too large": strings.Repeat("a", revocation.MaxPEMBytes+1)} {
		t.Run(name, func(t *testing.T) {
			if _, err := revocation.ParseURLEncodedPEM(in); err == nil {
				t.Fatal("parsed")
			}
		})
	}
}

type anyone struct{}

func (anyone) Attest(context.Context) ([]selector.Selector, error) { return nil, nil }

// The Watcher follows the real SDS server: a CRL pushed to its source
// revokes at the Watcher without a reconnect.
func TestWatcherFollowsSDS(t *testing.T) {
	ca := testca.New(t, td)
	src := workloadtest.New(t, ca)
	src.SetBundle(spiffebundle.FromX509Authorities(td, ca.Certificates()[:1]))
	src.SetCRLs([][]byte{ca.CRL(t)})
	srv, err := sds.New(sds.Config{Source: src, Attestor: anyone{}})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	w := &revocation.Watcher{Socket: sock, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	victim := ca.Issue(t, "spiffe://example.org/victim").Certificates[0]
	waitFor(t, func() error { return w.Ready(ctx) })
	if err := w.Check(victim); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	src.SetCRLs([][]byte{ca.CRL(t, victim.SerialNumber)})
	waitFor(t, func() error {
		if err := w.Check(victim); !errors.Is(err, revocation.ErrRevoked) {
			return errors.New("not revoked yet")
		}
		return nil
	})
	// A CRL signed by a stranger is refused (NACK); the last good set stays.
	src.SetCRLs([][]byte{testca.New(t, td).CRL(t)})
	time.Sleep(200 * time.Millisecond)
	if err := w.Check(victim); !errors.Is(err, revocation.ErrRevoked) {
		t.Fatalf("after a bad push: %v, want the last good set (revoked)", err)
	}
}

func waitFor(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
