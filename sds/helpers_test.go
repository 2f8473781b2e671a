package sds_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/pemfile"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
	"github.com/sigilhq/sigil/sds"
)

func mustSelectors(ss ...string) []selector.Selector {
	sels, err := selector.ParseAll(ss)
	if err != nil {
		panic(err)
	}
	return sels
}

// mdAttestor stands in for the agent's peer-credential attestor: every
// test caller shares this process's uid, so the caller names its selectors
// in the "test-selectors" metadata instead. No metadata: not attestable.
type mdAttestor struct{}

func (mdAttestor) Attest(ctx context.Context) ([]selector.Selector, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("test-selectors")
	if len(vals) == 0 {
		return nil, errors.New("no peer credentials")
	}
	return selector.ParseAll(strings.Split(vals[0], ","))
}

// as is a caller context for the given selectors, ending with the test.
func as(t testing.TB, sels ...string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if len(sels) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "test-selectors", strings.Join(sels, ","))
}

const (
	cartID  = "spiffe://example.org/ns/shop/sa/cart"
	otherID = "spiffe://example.org/ns/shop/sa/other"
	cartUID = "unix:uid:1000"
)

type harness struct {
	ca     *testca.CA
	fedCA  *testca.CA
	src    *workloadtest.Source
	reg    *prometheus.Registry
	socket string
	client *envoytest.Client
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newHarness serves an sds.Server over a real gRPC unix socket, fed by an
// in-memory source whose bundle holds a testca root.
func newHarness(t testing.TB, mutate ...func(*sds.Config)) *harness {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	h := &harness{
		ca:    ca,
		fedCA: testca.New(t, spiffeid.RequireTrustDomainFromString("partner.test")),
		src:   workloadtest.New(t, ca),
		reg:   prometheus.NewRegistry(),
		logs:  &syncBuffer{},
	}
	cfg := sds.Config{
		Source:   h.src,
		Attestor: mdAttestor{},
		Logger:   slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:  h.reg,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := sds.New(cfg)
	if err != nil {
		t.Fatalf("sds.New: %v", err)
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.socket = filepath.Join(dir, "agent.sock")
	lis, err := net.Listen("unix", h.socket)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	h.client, err = envoytest.Dial(h.socket, envoytest.Node("sidecar~10.0.0.1~cart-1~shop.svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.client.Close() })
	return h
}

// setEntry registers an entry for the callers with sels (federating with
// the partner trust domain) holding svid.
func (h *harness) setEntry(id string, svid *x509svid.SVID, sels ...string) {
	h.src.Put(workloadtest.Entry{ID: id, Selectors: mustSelectors(sels...), SVID: svid, FederatesWith: []spiffeid.TrustDomain{h.fedCA.TrustDomain()}})
}

// counter reads a metric from the harness's registry (0 if absent).
func (h *harness) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// leaf parses the first certificate of a tls_certificate secret.
func leaf(t testing.TB, s *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	if s.GetTlsCertificate() == nil {
		t.Fatalf("secret %q is not a tls certificate: %v", s.GetName(), s)
	}
	certs, err := pemfile.ParseCerts(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: %v", s.GetName(), err)
	}
	return certs[0]
}

func sameSerial(a, b *x509.Certificate) bool { return a.SerialNumber.Cmp(b.SerialNumber) == 0 }

// waitCounter waits (generously) until a metric reaches want: requests and
// source updates reach a stream by different paths, so a test that needs
// one processed before the other waits for its trace.
func (h *harness) waitCounter(t testing.TB, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := h.counter(t, name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
