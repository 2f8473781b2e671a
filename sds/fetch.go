package sds

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sigilhq/sigil/internal/workload"
)

// FetchSecrets returns the current secrets for the requested names. Every
// name must be servable now: unlike a stream, a fetch cannot wait.
func (s *Server) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	log := s.log.With("sds_fetch", s.streamID.Add(1))
	resp, err := s.fetch(ctx, req, log)
	switch status.Code(err) {
	case codes.OK:
		s.m.fetches.WithLabelValues("ok").Inc()
		s.m.pushes.WithLabelValues("fetch").Inc()
	case codes.NotFound:
		s.m.fetches.WithLabelValues("not_found").Inc()
	default:
		s.m.fetches.WithLabelValues("error").Inc()
	}
	return resp, err
}

func (s *Server) fetch(ctx context.Context, req *discoveryv3.DiscoveryRequest, log *slog.Logger) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkTypeURL(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	if err := checkNames(req.GetResourceNames()); err != nil {
		return nil, err
	}
	names := dedupe(req.GetResourceNames())
	if len(names) == 0 {
		return nil, status.Error(codes.InvalidArgument, "sds: fetch needs resource_names")
	}
	sels, err := s.attest(ctx, log)
	if err != nil {
		return nil, err
	}
	log.Info("sds fetch", "node_id", truncate(req.GetNode().GetId()), "resources", len(names))
	sub := s.source.Subscribe(sels)
	defer sub.Close()
	var u workload.Update
	select {
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case v, ok := <-sub.Updates():
		if !ok {
			return nil, status.Error(codes.Unavailable, "sds: identity source closed")
		}
		u = v
	}
	snap := newSnapshot(s.names, u, s.certs)
	var (
		anys    = make([]*anypb.Any, 0, len(names))
		pairs   = make([][2]string, 0, len(names))
		missing []string
	)
	for _, name := range names {
		res, err := snap.resolve(name)
		if err != nil {
			if errors.Is(err, errBadName) {
				return nil, status.Error(codes.InvalidArgument, "sds: "+err.Error())
			}
			return nil, status.Error(codes.Internal, "sds: cannot build secret")
		}
		if res == nil {
			missing = append(missing, truncate(name))
			continue
		}
		anys = append(anys, res.any)
		pairs = append(pairs, [2]string{name, res.version})
	}
	if len(missing) > 0 {
		return nil, status.Errorf(codes.NotFound, "sds: no secret for %s yet", strings.Join(missing, ", "))
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: versionOf(pairs), Resources: anys, TypeUrl: SecretTypeURL}, nil
}
