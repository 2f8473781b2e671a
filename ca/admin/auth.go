package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/store"
)

// methodPrefix is the gRPC full-method prefix of the Admin service; the
// interceptors leave other services on the same grpc.Server alone.
const methodPrefix = "/sigil.admin.v1.Admin/"

type actorKey struct{}

// actorFrom returns the authenticated caller that the interceptor stored.
func actorFrom(ctx context.Context) (string, bool) {
	a, ok := ctx.Value(actorKey{}).(string)
	return a, ok && a != ""
}

// ServerOptions returns the interceptors that authenticate admin callers,
// for grpc.NewServer.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(s.StreamInterceptor()),
	}
}

// UnaryInterceptor authenticates every Admin call: a call over a unix socket
// is the local admin; a call over TLS must carry a verified client
// X509-SVID issued for a registration entry that has admin set.
// Anything else is refused with PermissionDenied.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, methodPrefix) {
			return handler(ctx, req)
		}
		actor, err := s.authenticate(ctx)
		if err != nil {
			s.log.Warn("admin call refused", "method", info.FullMethod, "error", err)
			return nil, err
		}
		return handler(context.WithValue(ctx, actorKey{}, actor), req)
	}
}

// StreamInterceptor is UnaryInterceptor's twin for streaming calls.
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, methodPrefix) {
			return handler(srv, ss)
		}
		actor, err := s.authenticate(ss.Context())
		if err != nil {
			s.log.Warn("admin call refused", "method", info.FullMethod, "error", err)
			return err
		}
		return handler(srv, &actorStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), actorKey{}, actor)})
	}
}

type actorStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *actorStream) Context() context.Context { return a.ctx }

// authenticate names the caller or returns a PermissionDenied status.
func (s *Server) authenticate(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.PermissionDenied, "admin api: unknown caller")
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return s.authenticateTLS(ctx, info)
	}
	if p.Addr != nil && p.Addr.Network() == "unix" {
		return LocalAdmin, nil
	}
	return "", status.Error(codes.PermissionDenied, "admin api: callers need the local admin socket or an admin SVID over mTLS")
}

// AuthenticateTLS names the caller of a TLS connection by the rules of
// the admin API over mTLS, for other read-only admin surfaces (the web
// console); the error is a PermissionDenied status.
func (s *Server) AuthenticateTLS(ctx context.Context, cs tls.ConnectionState) (string, error) {
	return s.authenticateTLS(ctx, credentials.TLSInfo{State: cs})
}

// authenticateTLS admits a verified X509-SVID of our trust domain only when
// the registration entry the CA recorded in it (ca.EntryIDFromCert) still
// exists, is for exactly the SVID's SPIFFE ID and has admin set. Rights
// follow the entry, not the SPIFFE ID: another entry sharing the ID, an
// agent's SVID and the CA's own never get them.
func (s *Server) authenticateTLS(ctx context.Context, info credentials.TLSInfo) (string, error) {
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return "", status.Error(codes.PermissionDenied, "admin api: a verified client X509-SVID is required")
	}
	leaf := chains[0][0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return "", status.Error(codes.PermissionDenied, "admin api: client certificate is not an X509-SVID")
	}
	if !id.MemberOf(s.td) {
		return "", status.Errorf(codes.PermissionDenied, "admin api: %s is not in trust domain %s", id, s.td)
	}
	entryID := ca.EntryIDFromCert(leaf)
	if entryID == "" {
		return "", status.Errorf(codes.PermissionDenied, "admin api: the SVID of %s names no registration entry (agent and CA SVIDs are never admin)", id)
	}
	e, err := s.store.GetEntry(ctx, entryID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", status.Errorf(codes.PermissionDenied, "admin api: entry %s of %s no longer exists", entryID, id)
	case err != nil:
		s.log.Error("look up admin entry", "spiffe_id", id.String(), "entry_id", entryID, "error", err)
		return "", status.Error(codes.Unavailable, "admin api: cannot check the caller's entry")
	case e.SPIFFEID != id.String():
		return "", status.Errorf(codes.PermissionDenied, "admin api: entry %s is for another SPIFFE ID than %s", entryID, id)
	case !e.Admin:
		return "", status.Errorf(codes.PermissionDenied, "admin api: entry %s of %s is not an admin entry", entryID, id)
	}
	return id.String(), nil
}
