package workloadapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/workload"
)

// Header is the metadata key every Workload API call must carry with the
// value "true" (SPIFFE Workload API, section 5.2): it keeps browsers and
// other confused deputies from reaching the API through a proxy.
const Header = "workload.spiffe.io"

// Limits on JWT-SVID requests, so that one caller cannot make the agent
// mint and hold arbitrarily large tokens.
const (
	MaxAudiences   = 32
	MaxAudienceLen = 1024
	MaxTokenLen    = 16 << 10
)

// Attestor finds the selectors of the process behind a connection. An
// error matching attest.ErrRefused refuses the caller (PermissionDenied,
// with the error's text); any other is the agent's own failure. An
// Attestor that is also an attest.Watcher makes open streams attest their
// caller again when it says the caller's selectors may have changed.
type Attestor interface {
	Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error)
}

// Config configures a Server.
type Config struct {
	Source   Source
	Attestor Attestor
	// Logger receives per-call warnings. Default: discard.
	Logger *slog.Logger
	// Metrics, if set, counts calls by method and status code.
	Metrics Metrics
}

// Metrics is told about each finished call or stream.
type Metrics interface {
	ObserveCall(method string, code codes.Code)
}

// Server implements go-spiffe's SpiffeWorkloadAPIServer. WIT-SVID methods
// answer Unimplemented, which go-spiffe clients expect from servers
// without that profile.
type Server struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer

	src     Source
	att     Attestor
	log     *slog.Logger
	metrics Metrics
}

var _ workloadpb.SpiffeWorkloadAPIServer = (*Server)(nil)

// New returns a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("workload api: no source")
	}
	if cfg.Attestor == nil {
		return nil, errors.New("workload api: no attestor")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{src: cfg.Source, att: cfg.Attestor, log: cfg.Logger, metrics: cfg.Metrics}, nil
}

// Register adds the SpiffeWorkloadAPI service to g. g must have been made
// with ServerOptions (or another source of peercred.Info).
func (s *Server) Register(g grpc.ServiceRegistrar) {
	workloadpb.RegisterSpiffeWorkloadAPIServer(g, s)
}

// ServerOptions are the options the gRPC server on the agent socket needs:
// transport credentials that read the peer's credentials from the kernel.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.Creds(peercred.NewCredentials())}
}

func (s *Server) observe(method string, err error) {
	if s.metrics != nil {
		s.metrics.ObserveCall(method, status.Code(err))
	}
}

var errNoIdentity = status.Error(codes.PermissionDenied, workload.ErrNoIdentity.Error())

// attest checks the security header and attests the caller. The error is a
// gRPC status.
func (s *Server) attest(ctx context.Context, method string) (selector.Set, error) {
	info, err := s.caller(ctx, method)
	if err != nil {
		return nil, err
	}
	return s.attestCaller(ctx, method, info)
}

// caller checks the security header and returns the caller's peer
// credentials. The error is a gRPC status.
func (s *Server) caller(ctx context.Context, method string) (peercred.Info, error) {
	if err := checkHeader(ctx); err != nil {
		return peercred.Info{}, err
	}
	info, ok := peercred.FromContext(ctx)
	if !ok {
		s.log.Error("workload api call without peer credentials; is the server made with ServerOptions?", "method", method)
		return peercred.Info{}, status.Error(codes.Internal, "caller could not be identified")
	}
	return info, nil
}

// attestCaller attests info. The error is a gRPC status: PermissionDenied
// with the attestor's reason for a refused caller, Unauthenticated for one
// that exited, Internal for the agent's own failure.
func (s *Server) attestCaller(ctx context.Context, method string, info peercred.Info) (selector.Set, error) {
	sels, err := s.att.Attest(ctx, info)
	if err != nil {
		s.log.Warn("workload attestation failed", "method", method, "pid", info.PID, "uid", info.UID, "error", err)
		switch {
		case errors.Is(err, peercred.ErrExited):
			return nil, status.Error(codes.Unauthenticated, "caller exited during attestation")
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		case errors.Is(err, attest.ErrRefused):
			// The attestor's reason names pods and containers, never a
			// path or a secret: the caller may read it.
			return nil, status.Error(codes.PermissionDenied, "workload attestation refused: "+err.Error())
		}
		return nil, status.Error(codes.Internal, "workload attestation failed")
	}
	return selector.NewSet(sels...), nil
}

// watchCaller starts watching the attestor for changes to info's
// selectors; a nil channel if it cannot tell.
func (s *Server) watchCaller(info peercred.Info) (<-chan struct{}, func()) {
	if w, ok := s.att.(attest.Watcher); ok {
		return w.Watch(info)
	}
	return nil, func() {}
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(Header); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// snapshot returns what a workload with sels may see now.
func (s *Server) snapshot(ctx context.Context, sels selector.Set) (workload.Update, error) {
	sub := s.src.Subscribe(sels)
	defer sub.Close()
	select {
	case u := <-sub.Updates():
		return u, nil
	case <-ctx.Done():
		return workload.Update{}, status.FromContextError(ctx.Err()).Err()
	}
}

// watch sends what send makes of the current Update and of every later
// one, until the caller goes away or has no identity left. When the
// attestor says the caller's selectors may have changed (its pod was
// deleted or relabelled), the caller is attested again: refused, the
// stream ends with PermissionDenied; with other selectors, it follows
// what those may see, and ends as any other when that is no identity.
func (s *Server) watch(ctx context.Context, method string, send func(workload.Update) error) error {
	info, err := s.caller(ctx, method)
	if err != nil {
		return err
	}
	changed, stopWatch := s.watchCaller(info) // before attesting: no change is missed
	defer func() { stopWatch() }()
	sels, err := s.attestCaller(ctx, method, info)
	if err != nil {
		return err
	}
	sub := s.src.Subscribe(sels)
	defer func() { sub.Close() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			stopWatch()
			changed, stopWatch = s.watchCaller(info)
			next, err := s.attestCaller(ctx, method, info)
			if err != nil {
				s.log.Info("open stream ended: its caller is no longer attested", "method", method, "pid", info.PID, "error", err)
				return err
			}
			if maps.Equal(next, sels) {
				continue
			}
			s.log.Info("open stream follows its caller's new selectors", "method", method, "pid", info.PID)
			sub.Close()
			sels, sub = next, s.src.Subscribe(next)
		case u := <-sub.Updates():
			if len(u.Identities) == 0 {
				// SPIRE ends the stream the same way; go-spiffe clients
				// keep their last state and retry with backoff.
				return errNoIdentity
			}
			if u.Bundle == nil {
				s.log.Error("source update without a trust bundle", "method", method)
				return status.Error(codes.Unavailable, "trust bundle not available yet")
			}
			if err := send(u); err != nil {
				return err
			}
		}
	}
}

// FetchX509SVID streams the caller's X509-SVIDs with the bundles.
func (s *Server) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) (err error) {
	defer func() { s.observe("FetchX509SVID", err) }()
	return s.watch(stream.Context(), "FetchX509SVID", func(u workload.Update) error {
		resp, err := x509SVIDResponse(u)
		if err != nil {
			s.log.Error("marshal x509-svid response", "error", err)
			return status.Error(codes.Internal, "could not marshal X509-SVIDs")
		}
		return stream.Send(resp)
	})
}

func x509SVIDResponse(u workload.Update) (*workloadpb.X509SVIDResponse, error) {
	bundle := concatDER(u.Bundle)
	resp := &workloadpb.X509SVIDResponse{
		Svids:            make([]*workloadpb.X509SVID, 0, len(u.Identities)),
		FederatedBundles: make(map[string][]byte, len(u.FederatedBundles)),
	}
	for _, id := range u.Identities {
		if id.SVID == nil {
			return nil, fmt.Errorf("entry %s: no svid", id.EntryID)
		}
		certs, key, err := id.SVID.MarshalRaw()
		if err != nil {
			return nil, fmt.Errorf("entry %s: %w", id.EntryID, err)
		}
		resp.Svids = append(resp.Svids, &workloadpb.X509SVID{
			SpiffeId:    id.SVID.ID.String(),
			X509Svid:    certs,
			X509SvidKey: key,
			Bundle:      bundle,
			Hint:        id.SVID.Hint,
		})
	}
	for td, b := range u.FederatedBundles {
		if b != nil && td != u.Bundle.TrustDomain() {
			resp.FederatedBundles[td.IDString()] = concatDER(b)
		}
	}
	return resp, nil
}

func concatDER(b *spiffebundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, c.Raw...)
	}
	return out
}

// allBundles is the caller's own trust domain's bundle and the federated
// ones, keyed by trust domain ID.
func allBundles(u workload.Update, marshal func(*spiffebundle.Bundle) ([]byte, error)) (map[string][]byte, error) {
	out := make(map[string][]byte, 1+len(u.FederatedBundles))
	for td, b := range u.FederatedBundles {
		if b == nil {
			continue
		}
		m, err := marshal(b)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", td, err)
		}
		out[td.IDString()] = m
	}
	m, err := marshal(u.Bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", u.Bundle.TrustDomain(), err)
	}
	out[u.Bundle.TrustDomain().IDString()] = m
	return out, nil
}

// bundleStream sends bundles when they differ from the last ones sent:
// SVID rotations do not reach bundle watchers.
func (s *Server) bundleStream(ctx context.Context, method string, marshal func(*spiffebundle.Bundle) ([]byte, error), send func(map[string][]byte) error) error {
	var last map[string][]byte
	return s.watch(ctx, method, func(u workload.Update) error {
		bundles, err := allBundles(u, marshal)
		if err != nil {
			s.log.Error("marshal bundles", "method", method, "error", err)
			return status.Error(codes.Internal, "could not marshal bundles")
		}
		if last != nil && maps.EqualFunc(last, bundles, bytes.Equal) {
			return nil
		}
		last = bundles
		return send(bundles)
	})
}

// FetchX509Bundles streams the X.509 bundles the caller may trust.
func (s *Server) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream grpc.ServerStreamingServer[workloadpb.X509BundlesResponse]) (err error) {
	defer func() { s.observe("FetchX509Bundles", err) }()
	return s.bundleStream(stream.Context(), "FetchX509Bundles",
		func(b *spiffebundle.Bundle) ([]byte, error) { return concatDER(b), nil },
		func(m map[string][]byte) error { return stream.Send(&workloadpb.X509BundlesResponse{Bundles: m}) })
}

// FetchJWTBundles streams the JWT bundles (JWKS documents) the caller may
// use to validate JWT-SVIDs.
func (s *Server) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream grpc.ServerStreamingServer[workloadpb.JWTBundlesResponse]) (err error) {
	defer func() { s.observe("FetchJWTBundles", err) }()
	return s.bundleStream(stream.Context(), "FetchJWTBundles",
		func(b *spiffebundle.Bundle) ([]byte, error) { return b.JWTBundle().Marshal() },
		func(m map[string][]byte) error { return stream.Send(&workloadpb.JWTBundlesResponse{Bundles: m}) })
}

// parseJWTSVIDRequest checks a FetchJWTSVID request; the error is an
// InvalidArgument status.
func parseJWTSVIDRequest(req *workloadpb.JWTSVIDRequest) (spiffeid.ID, []string, error) {
	if len(req.GetAudience()) == 0 {
		return spiffeid.ID{}, nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if len(req.GetAudience()) > MaxAudiences {
		return spiffeid.ID{}, nil, status.Errorf(codes.InvalidArgument, "too many audiences: %d, at most %d", len(req.GetAudience()), MaxAudiences)
	}
	for i, a := range req.GetAudience() {
		if err := checkAudience(a); err != nil {
			return spiffeid.ID{}, nil, status.Errorf(codes.InvalidArgument, "audience %d: %v", i, err)
		}
	}
	var id spiffeid.ID
	if req.GetSpiffeId() != "" {
		var err error
		id, err = spiffeid.FromString(req.GetSpiffeId())
		if err != nil {
			return spiffeid.ID{}, nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
	}
	return id, slices.Clone(req.GetAudience()), nil
}

func checkAudience(a string) error {
	switch {
	case a == "":
		return errors.New("empty")
	case len(a) > MaxAudienceLen:
		return fmt.Errorf("longer than %d bytes", MaxAudienceLen)
	}
	return nil
}

// FetchJWTSVID mints JWT-SVIDs for the caller's identities (or the one it
// names) and the requested audience.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workloadpb.JWTSVIDRequest) (_ *workloadpb.JWTSVIDResponse, err error) {
	defer func() { s.observe("FetchJWTSVID", err) }()
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	id, audience, err := parseJWTSVIDRequest(req)
	if err != nil {
		return nil, err
	}
	sels, err := s.attest(ctx, "FetchJWTSVID")
	if err != nil {
		return nil, err
	}
	u, err := s.snapshot(ctx, sels)
	if err != nil {
		return nil, err
	}
	mine := make(map[spiffeid.ID]string, len(u.Identities))
	for _, ident := range u.Identities {
		if ident.SVID != nil {
			mine[ident.SVID.ID] = ident.SVID.Hint
		}
	}
	if len(mine) == 0 {
		return nil, errNoIdentity
	}
	if _, ok := mine[id]; !id.IsZero() && !ok {
		return nil, errNoIdentity
	}
	svids, err := s.src.FetchJWTSVID(ctx, sels, id, audience)
	switch {
	case errors.Is(err, workload.ErrNoIdentity):
		return nil, errNoIdentity
	case err != nil:
		s.log.Warn("fetch jwt-svid", "spiffe_id", id, "error", err)
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, status.Error(codes.Unavailable, "could not mint JWT-SVID")
	}
	resp := &workloadpb.JWTSVIDResponse{Svids: make([]*workloadpb.JWTSVID, 0, len(svids))}
	for _, sv := range svids {
		hint, ok := mine[sv.ID]
		if !ok || (!id.IsZero() && sv.ID != id) {
			// The source gave an identity the caller does not hold:
			// never pass it on.
			s.log.Error("source returned a jwt-svid the caller does not hold", "spiffe_id", sv.ID)
			continue
		}
		resp.Svids = append(resp.Svids, &workloadpb.JWTSVID{SpiffeId: sv.ID.String(), Svid: sv.Token, Hint: hint})
	}
	if len(resp.Svids) == 0 {
		return nil, errNoIdentity
	}
	return resp, nil
}

// parseValidateRequest checks a ValidateJWTSVID request; the error is an
// InvalidArgument status.
func parseValidateRequest(req *workloadpb.ValidateJWTSVIDRequest) error {
	if req.GetAudience() == "" {
		return status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if err := checkAudience(req.GetAudience()); err != nil {
		return status.Errorf(codes.InvalidArgument, "audience: %v", err)
	}
	if req.GetSvid() == "" {
		return status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if len(req.GetSvid()) > MaxTokenLen {
		return status.Errorf(codes.InvalidArgument, "svid longer than %d bytes", MaxTokenLen)
	}
	return nil
}

// ValidateJWTSVID validates a JWT-SVID for the audience against the JWT
// bundles the caller may see.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workloadpb.ValidateJWTSVIDRequest) (_ *workloadpb.ValidateJWTSVIDResponse, err error) {
	defer func() { s.observe("ValidateJWTSVID", err) }()
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if err := parseValidateRequest(req); err != nil {
		return nil, err
	}
	sels, err := s.attest(ctx, "ValidateJWTSVID")
	if err != nil {
		return nil, err
	}
	u, err := s.snapshot(ctx, sels)
	if err != nil {
		return nil, err
	}
	if len(u.Identities) == 0 {
		return nil, errNoIdentity
	}
	if u.Bundle == nil {
		return nil, status.Error(codes.Unavailable, "trust bundle not available yet")
	}
	set := jwtbundle.NewSet(u.Bundle.JWTBundle())
	for td, b := range u.FederatedBundles {
		if b != nil && td != u.Bundle.TrustDomain() {
			set.Add(b.JWTBundle())
		}
	}
	sv, err := jwtsvid.ParseAndValidate(req.GetSvid(), set, []string{req.GetAudience()})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(sv.Claims)
	if err != nil {
		s.log.Warn("jwt-svid claims not representable", "spiffe_id", sv.ID, "error", err)
		return nil, status.Error(codes.InvalidArgument, "claims cannot be represented as a protobuf Struct")
	}
	return &workloadpb.ValidateJWTSVIDResponse{SpiffeId: sv.ID.String(), Claims: claims}, nil
}
