package nodeapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// Attest proves the node with the attestor named in the first message and
// returns the agent's SVID. The agent's CSR only carries its public key: its
// subject and SANs are ignored, because a join-token agent cannot know its
// ID before the token is checked; the CA signs for the attested agent ID.
func (s *Server) Attest(stream nodev1.Node_AttestServer) error {
	ctx := stream.Context()
	deadline := time.NewTimer(s.cfg.AttestTimeout)
	defer deadline.Stop()
	req, err := recvBefore(stream, deadline.C)
	if err != nil {
		return s.attestFail(ctx, "", status.Code(err), "attest: no parameters received: "+status.Convert(err).Message())
	}
	p := req.GetParams()
	if p == nil {
		return s.attestFail(ctx, "", codes.InvalidArgument, "attest: the first message must carry params")
	}
	typ := p.GetType()
	att, ok := s.attestors[typ]
	if !ok {
		return s.attestFail(ctx, "unknown", codes.InvalidArgument, fmt.Sprintf("attest: unknown attestation type %q; this CA accepts %s", truncate(typ, 64), s.attestorNames()))
	}
	// Check the CSR before the attestor consumes anything (a join token).
	pub, err := parseAgentCSR(p.GetCsr())
	if err != nil {
		return s.attestFail(ctx, typ, codes.InvalidArgument, "attest: "+err.Error())
	}
	challenge := func(ctx context.Context, nonce []byte) ([]byte, error) {
		if err := stream.Send(&nodev1.AttestResponse{Step: &nodev1.AttestResponse_Challenge{Challenge: nonce}}); err != nil {
			return nil, err
		}
		r, err := recvBefore(stream, deadline.C)
		if err != nil {
			return nil, fmt.Errorf("%w: no challenge response: %v", nodeattest.ErrRefused, status.Convert(err).Message())
		}
		resp := r.GetChallengeResponse()
		if resp == nil {
			return nil, fmt.Errorf("%w: expected a challenge response", nodeattest.ErrInvalid)
		}
		return resp, nil
	}
	res, err := att.Attest(ctx, p, challenge)
	switch {
	case errors.Is(err, nodeattest.ErrInvalid):
		return s.attestFail(ctx, typ, codes.InvalidArgument, "attest: "+err.Error())
	case errors.Is(err, nodeattest.ErrRefused):
		return s.attestFail(ctx, typ, codes.PermissionDenied, "attest: "+err.Error())
	case err != nil:
		s.log.ErrorContext(ctx, "attestation failed", "type", typ, "error", err)
		return s.attestFail(ctx, typ, codes.Unavailable, "attest: the CA could not complete the attestation, try again")
	}
	id := res.AgentID
	if !id.MemberOf(s.td) || !sigilid.IsAgent(id) {
		s.log.ErrorContext(ctx, "attestor returned a bad agent id", "type", typ, "agent_id", id.String())
		return s.attestFail(ctx, typ, codes.Internal, "attest: attestor returned an invalid agent ID")
	}
	existing, err := s.cfg.Store.GetAgent(ctx, id.String())
	found := err == nil
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		s.log.ErrorContext(ctx, "get agent", "agent_id", id.String(), "error", err)
		return s.attestFail(ctx, typ, codes.Unavailable, "attest: cannot read the agent record, try again")
	case existing.Banned:
		s.audit(ctx, id.String(), "agent.attest", id.String(), map[string]any{"type": typ, "result": "refused: banned"})
		return s.attestFail(ctx, typ, codes.PermissionDenied, fmt.Sprintf("attest: agent %s is banned", id))
	}
	svid, err := s.signAgent(ctx, id, pub)
	if err != nil {
		s.log.ErrorContext(ctx, "sign agent svid", "agent_id", id.String(), "error", err)
		return s.attestFail(ctx, typ, codes.Unavailable, "attest: the CA could not sign the agent SVID, try again")
	}
	rec := store.Agent{
		ID:              id.String(),
		AttestationType: typ,
		Serial:          serialHex(svid.Certificates[0]),
		ExpiresAt:       svid.Certificates[0].NotAfter,
		Selectors:       res.Selectors,
	}
	if found {
		_, err = s.cfg.Store.UpdateAgent(ctx, id.String(), rec)
	} else if _, err = s.cfg.Store.CreateAgent(ctx, id.String(), rec); errors.Is(err, store.ErrDuplicate) {
		_, err = s.cfg.Store.UpdateAgent(ctx, id.String(), rec)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "save agent", "agent_id", id.String(), "error", err)
		return s.attestFail(ctx, typ, codes.Unavailable, "attest: cannot save the agent record, try again")
	}
	out, err := s.agentSVID(ctx, svid)
	if err != nil {
		return s.attestFail(ctx, typ, codes.Unavailable, "attest: "+err.Error())
	}
	s.audit(ctx, id.String(), "agent.attest", id.String(), map[string]any{
		"type": typ, "result": "ok", "serial": rec.Serial, "selectors": selector.Strings(rec.Selectors), "reattest": found,
	})
	s.m.attest.WithLabelValues(typ, "ok").Inc()
	s.log.InfoContext(ctx, "agent attested", "agent_id", id.String(), "type", typ, "serial", rec.Serial)
	if err := stream.Send(&nodev1.AttestResponse{Step: &nodev1.AttestResponse_Result{Result: out}}); err != nil {
		return err
	}
	return nil
}

// recvBefore receives the next message unless timeout fires first; then the
// handler returns, which cancels the stream and ends the pending Recv.
func recvBefore(stream nodev1.Node_AttestServer, timeout <-chan time.Time) (*nodev1.AttestRequest, error) {
	type result struct {
		req *nodev1.AttestRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		req, err := stream.Recv()
		ch <- result{req, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, status.Error(codes.Canceled, "the agent closed the stream")
		}
		return r.req, nil
	case <-timeout:
		return nil, status.Error(codes.DeadlineExceeded, "attestation took too long")
	}
}

func (s *Server) attestFail(ctx context.Context, typ string, code codes.Code, msg string) error {
	label := typ
	if _, ok := s.attestors[typ]; !ok {
		label = "unknown"
	}
	s.m.attest.WithLabelValues(label, "refused").Inc()
	s.log.WarnContext(ctx, "attestation refused", "type", label, "code", code.String(), "error", msg)
	return status.Error(code, msg)
}

func (s *Server) attestorNames() string {
	names := make([]string, 0, len(s.attestors))
	for n := range s.attestors {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none (no attestor configured)"
	}
	return strings.Join(names, ", ")
}

// RenewAgent signs a new SVID for the calling agent; the old one stops
// working for node API calls at once (its serial is no longer current).
func (s *Server) RenewAgent(ctx context.Context, req *nodev1.RenewAgentRequest) (*nodev1.RenewAgentResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := parseAgentCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "renew agent: "+err.Error())
	}
	svid, err := s.signAgent(ctx, c.id, pub)
	if err != nil {
		s.log.ErrorContext(ctx, "sign agent svid", "agent_id", c.id.String(), "error", err)
		return nil, status.Error(codes.Unavailable, "renew agent: the CA could not sign, try again")
	}
	// Re-read right before writing so a ban or eviction since the call
	// began is not undone (the store has no compare-and-swap for agents).
	a, err := s.cfg.Store.GetAgent(ctx, c.id.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.PermissionDenied, "renew agent: agent %s was evicted", c.id)
	case err != nil:
		return nil, status.Error(codes.Unavailable, "renew agent: cannot read the agent record, try again")
	case a.Banned || a.Serial != c.agent.Serial:
		return nil, status.Errorf(codes.PermissionDenied, "renew agent: agent %s was banned or renewed meanwhile", c.id)
	}
	old := a.Serial
	a.Serial = serialHex(svid.Certificates[0])
	a.ExpiresAt = svid.Certificates[0].NotAfter
	if _, err := s.cfg.Store.UpdateAgent(ctx, c.id.String(), a); err != nil {
		s.log.ErrorContext(ctx, "save agent", "agent_id", c.id.String(), "error", err)
		return nil, status.Error(codes.Unavailable, "renew agent: cannot save the agent record, try again")
	}
	out, err := s.agentSVID(ctx, svid)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "renew agent: "+err.Error())
	}
	s.log.InfoContext(ctx, "agent renewed", "agent_id", c.id.String(), "serial", a.Serial, "old_serial", old)
	return &nodev1.RenewAgentResponse{Svid: out}, nil
}

func (s *Server) signAgent(ctx context.Context, id spiffeid.ID, pub crypto.PublicKey) (*ca.X509SVID, error) {
	svid, err := s.cfg.CA.SignX509SVID(ctx, &ca.CSR{ID: id, PublicKey: pub}, ca.SVIDParams{TTL: s.cfg.AgentSVIDTTL})
	if err != nil {
		return nil, err
	}
	if len(svid.Certificates) == 0 {
		return nil, errors.New("ca returned an empty chain")
	}
	return svid, nil
}

func (s *Server) agentSVID(ctx context.Context, svid *ca.X509SVID) (*nodev1.AgentSVID, error) {
	b, err := s.cfg.Store.GetBundle(ctx, s.td.Name())
	if err != nil {
		s.log.ErrorContext(ctx, "get own bundle", "error", err)
		return nil, errors.New("cannot read the trust bundle, try again")
	}
	chain := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		chain[i] = c.Raw
	}
	out := &nodev1.AgentSVID{SpiffeId: svid.ID.String(), CertChain: chain, Bundle: apiconv.BundleToProto(b)}
	// The roots (the old and the new one during a root rotation) become
	// the agent's persisted bootstrap trust.
	if r, ok := s.cfg.CA.(interface {
		Roots(ctx context.Context) ([]*x509.Certificate, error)
	}); ok {
		roots, err := r.Roots(ctx)
		if err != nil {
			s.log.ErrorContext(ctx, "upstream roots", "error", err)
			return nil, errors.New("cannot read the upstream roots, try again")
		}
		for _, c := range roots {
			out.UpstreamRoots = append(out.UpstreamRoots, c.Raw)
		}
	}
	return out, nil
}

// parseAgentCSR checks an agent's CSR: parseable, within ca.MaxCSRSize,
// self-signed correctly, with an acceptable key (ECDSA P-256/P-384, RSA
// 2048–8192, Ed25519). Names in it are ignored.
func parseAgentCSR(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 {
		return nil, errors.New("csr is required")
	}
	if len(der) > ca.MaxCSRSize {
		return nil, fmt.Errorf("csr larger than %d bytes", ca.MaxCSRSize)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("csr does not parse: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature does not verify: %v", err)
	}
	switch k := req.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("csr key: ECDSA curve %s not allowed, use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 || bits > 8192 {
			return nil, fmt.Errorf("csr key: RSA key of %d bits not allowed, use 2048 to 8192", bits)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("csr key: type %T not allowed", req.PublicKey)
	}
	return req.PublicKey, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
