package admin

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca/federation"
	"github.com/sigilhq/sigil/ca/store"
)

// Sources of a federation relationship.
const (
	sourceAPI    = "api"
	sourceConfig = "config"
)

// CreateFederation records a federation relationship and, when given, the
// peer's initial bundle.
func (s *Server) CreateFederation(ctx context.Context, req *adminv1.CreateFederationRequest) (*adminv1.CreateFederationResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	pb := req.GetFederation()
	td, err := s.foreignTrustDomain(pb.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("federation with %s", td.Name())
	if s.configFederation(td.Name()) != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is set in ca.yaml; change it there", what)
	}
	f := store.FederationRelationship{
		TrustDomain: td.Name(), BundleEndpointURL: pb.GetBundleEndpointUrl(), Profile: pb.GetProfile(),
		EndpointSPIFFEID: pb.GetEndpointSpiffeId(), WebRootsPEM: pb.GetWebRootsPem(),
	}
	if _, err := federation.WebRoots(f.WebRootsPEM); err != nil {
		return nil, invalid("federation.web_roots_pem", "%v", err)
	}
	var initial *store.Bundle
	if data := req.GetBundle(); len(data) > 0 {
		b, err := federation.ParseBundle(td, data)
		if err != nil {
			return nil, invalid("bundle", "%v", err)
		}
		sb, err := federation.ToStore(b)
		if err != nil {
			return nil, invalid("bundle", "%v", err)
		}
		initial = &sb
	} else if f.Profile == federation.ProfileSPIFFE {
		if _, err := s.store.GetBundle(ctx, td.Name()); errors.Is(err, store.ErrNotFound) {
			return nil, invalid("bundle", "https_spiffe needs the peer's initial bundle to authenticate its endpoint")
		}
	}
	created, err := s.store.CreateFederation(ctx, actor, f)
	if err != nil {
		return nil, s.fail(ctx, "create federation", what, err)
	}
	if initial != nil {
		if err := s.store.SetBundle(ctx, actor, *initial); err != nil {
			return nil, s.fail(ctx, "create federation", "initial bundle of "+td.Name(), err)
		}
	}
	s.log.InfoContext(ctx, "federation created", "actor", actor, "trust_domain", td.Name(), "profile", f.Profile, "url", f.BundleEndpointURL)
	return &adminv1.CreateFederationResponse{Federation: s.federationToProto(created, sourceAPI)}, nil
}

// ListFederations lists the relationships of ca.yaml, then those created
// over the API, each with its refresh status.
func (s *Server) ListFederations(ctx context.Context, _ *adminv1.ListFederationsRequest) (*adminv1.ListFederationsResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	stored, err := s.store.ListFederations(ctx)
	if err != nil {
		return nil, s.fail(ctx, "list federations", "federations", err)
	}
	resp := &adminv1.ListFederationsResponse{}
	for _, f := range s.fedConf {
		resp.Federations = append(resp.Federations, s.federationToProto(f, sourceConfig))
	}
	for _, f := range stored {
		if s.configFederation(f.TrustDomain) == nil {
			resp.Federations = append(resp.Federations, s.federationToProto(f, sourceAPI))
		}
	}
	return resp, nil
}

// GetFederation returns one relationship with its refresh status.
func (s *Server) GetFederation(ctx context.Context, req *adminv1.GetFederationRequest) (*adminv1.GetFederationResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	td, err := s.foreignTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	if f := s.configFederation(td.Name()); f != nil {
		return &adminv1.GetFederationResponse{Federation: s.federationToProto(*f, sourceConfig)}, nil
	}
	f, err := s.store.GetFederation(ctx, td.Name())
	if err != nil {
		return nil, s.fail(ctx, "get federation", "federation with "+td.Name(), err)
	}
	return &adminv1.GetFederationResponse{Federation: s.federationToProto(f, sourceAPI)}, nil
}

// DeleteFederation stops refreshing a trust domain's bundle.
func (s *Server) DeleteFederation(ctx context.Context, req *adminv1.DeleteFederationRequest) (*adminv1.DeleteFederationResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	td, err := s.foreignTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	what := "federation with " + td.Name()
	if s.configFederation(td.Name()) != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is set in ca.yaml; remove it there", what)
	}
	if err := s.store.DeleteFederation(ctx, actor, td.Name()); err != nil {
		return nil, s.fail(ctx, "delete federation", what, err)
	}
	s.log.InfoContext(ctx, "federation deleted", "actor", actor, "trust_domain", td.Name())
	return &adminv1.DeleteFederationResponse{}, nil
}

func (s *Server) configFederation(td string) *store.FederationRelationship {
	for i := range s.fedConf {
		if s.fedConf[i].TrustDomain == td {
			return &s.fedConf[i]
		}
	}
	return nil
}

func (s *Server) federationToProto(f store.FederationRelationship, source string) *adminv1.Federation {
	out := &adminv1.Federation{
		TrustDomain: f.TrustDomain, BundleEndpointUrl: f.BundleEndpointURL, Profile: f.Profile,
		EndpointSpiffeId: f.EndpointSPIFFEID, WebRootsPem: f.WebRootsPEM, Source: source,
	}
	if s.fed == nil {
		return out
	}
	for _, st := range s.fed.Statuses() {
		if st.TrustDomain.Name() != f.TrustDomain || st.LastAttempt.IsZero() {
			continue
		}
		out.Status = &adminv1.FederationStatus{
			LastAttempt: timestamppb.New(st.LastAttempt), LastError: st.LastError,
			ConsecutiveFailures: int32(min(st.ConsecutiveFailures, 1<<30)), Sequence: st.Sequence,
			NextRefresh: timestamppb.New(st.NextRefresh),
		}
		if !st.LastSuccess.IsZero() {
			out.Status.LastSuccess = timestamppb.New(st.LastSuccess)
		}
	}
	return out
}
