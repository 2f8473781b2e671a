package nodeapi

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// methodPrefix is the full-method prefix of the Node service.
const methodPrefix = "/sigil.node.v1.Node/"

// caller is an authenticated agent: its verified SVID and its store record
// as read for this call.
type caller struct {
	id    spiffeid.ID
	agent store.Agent
	leaf  *x509.Certificate
}

type callerKey struct{}

func callerFrom(ctx context.Context) (*caller, error) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok || c == nil {
		return nil, status.Error(codes.Unauthenticated, "node api: caller not authenticated")
	}
	return c, nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, methodPrefix) {
		return handler(ctx, req)
	}
	c, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(context.WithValue(ctx, callerKey{}, c), req)
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, methodPrefix) || info.FullMethod == nodev1.Node_Attest_FullMethodName {
		return handler(srv, ss)
	}
	c, err := s.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &callerStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, c)})
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }

// authError is a refused authentication: a status for the client and a
// reason label for the metric.
type authError struct {
	code   codes.Code
	reason string
	msg    string
}

func (e *authError) Error() string { return e.msg }

func refuse(code codes.Code, reason, format string, args ...any) error {
	return &authError{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// authenticate checks the verified client certificate against the agent's
// store record; it logs and counts refusals and returns a status error.
func (s *Server) authenticate(ctx context.Context, method string) (*caller, error) {
	c, err := s.check(ctx)
	if err == nil {
		return c, nil
	}
	var ae *authError
	if errors.As(err, &ae) {
		s.m.authn.WithLabelValues(ae.reason).Inc()
		s.log.WarnContext(ctx, "node api call refused", "method", method, "reason", ae.reason, "error", ae.msg)
		return nil, status.Error(ae.code, "node api: "+ae.msg)
	}
	s.m.authn.WithLabelValues("store").Inc()
	s.log.ErrorContext(ctx, "node api authentication failed", "method", method, "error", err)
	return nil, status.Error(codes.Unavailable, "node api: cannot check the agent's record, try again")
}

func (s *Server) check(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, refuse(codes.Unauthenticated, "no_peer", "unknown caller")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, refuse(codes.Unauthenticated, "no_tls", "the node api needs TLS with the agent's X509-SVID as client certificate")
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return nil, refuse(codes.Unauthenticated, "no_client_cert", "a verified client X509-SVID is required (attest first)")
	}
	leaf := chains[0][0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, refuse(codes.PermissionDenied, "not_svid", "client certificate is not an X509-SVID: %v", err)
	}
	if !id.MemberOf(s.td) || !sigilid.IsAgent(id) {
		return nil, refuse(codes.PermissionDenied, "not_agent", "%s is not an agent ID of trust domain %s", id, s.td)
	}
	now := s.now()
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, refuse(codes.Unauthenticated, "expired", "agent SVID of %s is not valid now (valid %s to %s): attest again", id,
			leaf.NotBefore.UTC().Format("2006-01-02T15:04:05Z"), leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	}
	a, err := s.cfg.Store.GetAgent(ctx, id.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, refuse(codes.PermissionDenied, "unknown_agent", "agent %s is not attested (evicted?): attest again", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get agent %s: %w", id, err)
	}
	if a.Banned {
		return nil, refuse(codes.PermissionDenied, "banned", "agent %s is banned", id)
	}
	if serial := serialHex(leaf); a.Serial == "" || serial != a.Serial {
		return nil, refuse(codes.PermissionDenied, "superseded", "agent SVID serial %s of %s is not the current one: it was renewed or revoked", serial, id)
	}
	if !a.ExpiresAt.IsZero() && now.After(a.ExpiresAt) {
		return nil, refuse(codes.Unauthenticated, "expired", "agent %s: SVID expired at %s: attest again", id, a.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return &caller{id: id, agent: a, leaf: leaf}, nil
}

// serialHex is how agent SVID serials are kept in the store: lowercase hex
// without leading zeros.
func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
