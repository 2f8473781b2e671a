package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/nodeattest"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/idleconn"
)

// simAgent is one simulated agent: attested with a join token, holding an
// agent/cache.Cache that syncs and mints over one mTLS connection, which
// it replaces when it renews its own SVID.
type simAgent struct {
	f     *fleet
	token string
	id    spiffeid.ID
	addr  string

	mu   sync.Mutex
	svid *x509svid.SVID
	cc   *grpc.ClientConn

	cache   *cache.Cache
	rotSeen bool // under f.mu: saw a bundle since the rotation began
}

// swapConn is the agent's current connection: the node API client the cache
// holds goes through it, so a renewal swaps the connection under the
// cache.
type swapConn struct{ a *simAgent }

func (s swapConn) current() *grpc.ClientConn {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	return s.a.cc
}

func (s swapConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return s.current().Invoke(ctx, method, args, reply, opts...)
}

func (s swapConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return s.current().NewStream(ctx, desc, method, opts...)
}

func newKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func (f *fleet) authorizeCA() tlsconfig.Authorizer {
	return tlsconfig.AuthorizeID(spiffeid.RequireFromPath(f.td, "/sigil/ca"))
}

// attest runs join-token attestation over a TLS connection that checks
// the CA against the bootstrap bundle, then opens the mTLS connection.
func (a *simAgent) attest(ctx context.Context) error {
	bundle := x509bundle.FromX509Authorities(a.f.td, a.f.roots)
	cc, err := grpc.NewClient("passthrough:///"+a.addr, dialOptions(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, a.f.authorizeCA())))...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", a.addr, err)
	}
	defer cc.Close()
	key, csr, err := newCSR()
	if err != nil {
		return err
	}
	res, err := nodeattest.Attest(ctx, nodev1.NewNodeClient(cc), nodeattest.JoinToken{Token: a.token}, csr)
	if err != nil {
		return err
	}
	return a.install(res, key)
}

// dialOptions are the real agent's: it pings a CA silent for 30 s and
// dials without the kernel's keepalive (agent.dial, internal/idleconn).
func dialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	return append(idleconn.DialOptions(idleconn.ClientPingAfter, idleconn.ClientPingTimeout), grpc.WithTransportCredentials(creds))
}

func newCSR() (crypto.Signer, []byte, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("agent key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent csr: %w", err)
	}
	return key, csr, nil
}

// install makes res the agent's SVID and opens a new mTLS connection with
// it (the CA accepts only an agent's current SVID), closing the old one.
func (a *simAgent) install(res *nodev1.AgentSVID, key crypto.Signer) error {
	var chain []byte
	for _, der := range res.GetCertChain() {
		chain = append(chain, der...)
	}
	certs, err := x509.ParseCertificates(chain)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("agent svid: %v", err)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return fmt.Errorf("agent svid: %w", err)
	}
	svid := &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	conf := tlsconfig.MTLSClientConfig(x509svid.Source(staticSVID{svid}), agentBundle{a}, a.f.authorizeCA())
	conf.VerifyPeerCertificate = a.verifyCA
	cc, err := grpc.NewClient("passthrough:///"+a.addr, dialOptions(credentials.NewTLS(conf))...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", a.addr, err)
	}
	a.mu.Lock()
	old := a.cc
	a.svid, a.id, a.cc = svid, id, cc
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// verifyCA checks the CA's certificate as the real agent does
// (agent/catrust.go): by the bundle the agent last synced, else by the
// bootstrap roots, which chain a key the CA activated before its bundle
// reached the agent. (The simulated CA revokes no key, so there is no
// revoked list to refuse.)
func (a *simAgent) verifyCA(raw [][]byte, _ [][]*x509.Certificate) error {
	id, chains, err := x509svid.ParseAndVerify(raw, agentBundle{a})
	if err != nil {
		var bootErr error
		id, chains, bootErr = x509svid.ParseAndVerify(raw, x509bundle.FromX509Authorities(a.f.td, a.f.roots))
		if bootErr != nil {
			return err
		}
	}
	return a.f.authorizeCA()(id, chains)
}

// agentBundle trusts the CA by the bundle the agent last synced (the CA
// rotates its keys), and by the bootstrap roots before the first sync.
type agentBundle struct{ a *simAgent }

func (b agentBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b.a.mu.Lock()
	c := b.a.cache
	b.a.mu.Unlock()
	if c != nil {
		if own := c.Bundle(); own != nil && own.TrustDomain() == td {
			return x509bundle.FromX509Authorities(td, own.X509Authorities()), nil
		}
	}
	return x509bundle.FromX509Authorities(b.a.f.td, b.a.f.roots).GetX509BundleForTrustDomain(td)
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// renew renews the agent's own SVID and moves the cache to a connection
// that presents it.
func (a *simAgent) renew(ctx context.Context) error {
	key, csr, err := newCSR()
	if err != nil {
		return err
	}
	// The call outlives ctx: a renewal the CA made whose answer the agent
	// dropped would leave it with an SVID the CA no longer accepts.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	res, err := nodev1.NewNodeClient(swapConn{a}).RenewAgent(ctx, &nodev1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("renew agent: %w", err)
	}
	if err := a.install(res.GetSvid(), key); err != nil {
		return err
	}
	a.cache.Reconnect()
	return nil
}

// start makes the agent's cache; run runs it until ctx ends.
func (a *simAgent) start() error {
	c, err := cache.New(cache.Config{
		TrustDomain: a.f.td,
		Client:      &watchClient{NodeClient: nodev1.NewNodeClient(swapConn{a}), a: a},
		BatchSize:   100,
		RetryMin:    50 * time.Millisecond,
		RetryMax:    2 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.cache = c
	a.mu.Unlock()
	return nil
}

func (a *simAgent) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cc != nil {
		a.cc.Close()
	}
}

// watchClient is the node API as the cache sees it, noting when each
// entry change reaches the agent and counting signings and errors.
type watchClient struct {
	nodev1.NodeClient
	a *simAgent
}

func (w *watchClient) Sync(ctx context.Context, in *nodev1.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[nodev1.SyncResponse], error) {
	s, err := w.NodeClient.Sync(ctx, in, opts...)
	if err != nil {
		w.a.f.countErr(ctx, "sync", err)
		return nil, err
	}
	return &watchStream{ServerStreamingClient: s, a: w.a, ctx: ctx}, nil
}

func (w *watchClient) SignX509SVIDs(ctx context.Context, in *nodev1.SignX509SVIDsRequest, opts ...grpc.CallOption) (*nodev1.SignX509SVIDsResponse, error) {
	resp, err := w.NodeClient.SignX509SVIDs(ctx, in, opts...)
	if err != nil {
		w.a.f.countErr(ctx, "sign", err)
		return nil, err
	}
	for _, r := range resp.GetResults() {
		if r.GetError() != "" {
			w.a.f.countErr(ctx, "sign", errors.New(r.GetError()))
			continue
		}
		w.a.f.signed.Add(1)
	}
	return resp, nil
}

type watchStream struct {
	grpc.ServerStreamingClient[nodev1.SyncResponse]
	a   *simAgent
	ctx context.Context
	// present gathers the entry IDs of a full response split in parts
	// (only the first is marked full); nil between full responses.
	present map[string]bool
}

func (w *watchStream) Recv() (*nodev1.SyncResponse, error) {
	resp, err := w.ServerStreamingClient.Recv()
	if err != nil {
		w.a.f.countErr(w.ctx, "sync", err)
		return nil, err
	}
	now := time.Now()
	for _, e := range resp.GetEntries() {
		w.a.f.seen(e.GetSpiffeId(), now)
	}
	for _, id := range resp.GetDeletedEntryIds() {
		w.a.f.seen("deleted:"+id, now)
	}
	if resp.GetFull() {
		w.present = map[string]bool{}
	}
	if w.present != nil {
		// A full set replaces the agent's entries: what its parts (all
		// but the last with more set) leave out is deleted.
		for _, e := range resp.GetEntries() {
			w.present[e.GetId()] = true
		}
		if !resp.GetMore() {
			w.a.f.fullSeen(w.a, w.present, now)
			w.present = nil
		}
	}
	if len(resp.GetBundles()) > 0 {
		w.a.f.bundleSeen(w.a, now)
	}
	return resp, nil
}
