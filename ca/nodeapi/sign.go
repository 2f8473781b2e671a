package nodeapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/store"
)

// errRefused marks a per-CSR refusal that is the agent's fault.
var errRefused = errors.New("refused")

// SignX509SVIDs signs each CSR for its entry if the calling agent is
// authorized for it now (checked against the store on every call). Each
// CSR succeeds or fails on its own; one audit event records the batch.
func (s *Server) SignX509SVIDs(ctx context.Context, req *nodev1.SignX509SVIDsRequest) (*nodev1.SignX509SVIDsResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	csrs := req.GetCsrs()
	if len(csrs) == 0 {
		return nil, status.Error(codes.InvalidArgument, "sign x509-svids: csrs is empty")
	}
	if len(csrs) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "sign x509-svids: %d csrs, at most %d per call", len(csrs), MaxBatch)
	}
	z := s.authorizer(c.agent)
	type signed struct {
		EntryID string `json:"entry_id"`
		Serial  string `json:"serial"`
	}
	var ok []signed
	refused := 0
	out := &nodev1.SignX509SVIDsResponse{Results: make([]*nodev1.SignResult, len(csrs))}
	for i, r := range csrs {
		res := &nodev1.SignResult{EntryId: r.GetEntryId()}
		out.Results[i] = res
		svid, err := s.signOne(ctx, z, r)
		switch {
		case errors.Is(err, errRefused):
			refused++
			s.m.signed.WithLabelValues("x509", "refused").Inc()
			res.Error = err.Error()
			s.log.WarnContext(ctx, "csr refused", "agent_id", c.id.String(), "entry_id", truncate(r.GetEntryId(), 128), "error", err)
		case err != nil:
			s.m.signed.WithLabelValues("x509", "error").Inc()
			res.Error = "the CA could not sign, try again"
			s.log.ErrorContext(ctx, "sign x509-svid", "agent_id", c.id.String(), "entry_id", truncate(r.GetEntryId(), 128), "error", err)
		default:
			s.m.signed.WithLabelValues("x509", "ok").Inc()
			res.CaKeyId = svid.CAKeyID
			res.CertChain = make([][]byte, len(svid.Certificates))
			for j, cert := range svid.Certificates {
				res.CertChain[j] = cert.Raw
			}
			ok = append(ok, signed{EntryID: r.GetEntryId(), Serial: svid.Certificates[0].SerialNumber.Text(16)})
		}
	}
	s.audit(ctx, c.id.String(), "svid.sign", c.id.String(), map[string]any{
		"signed": ok, "refused": refused, "failed": len(csrs) - len(ok) - refused,
	})
	return out, nil
}

func (s *Server) signOne(ctx context.Context, z *authorizer, r *nodev1.CSRForEntry) (*ca.X509SVID, error) {
	e, err := s.authorizedEntry(ctx, z, r.GetEntryId())
	if err != nil {
		return nil, err
	}
	csr, err := ca.ParseCSR(r.GetCsr(), s.td)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errRefused, err)
	}
	if csr.ID.String() != e.SPIFFEID {
		return nil, fmt.Errorf("%w: csr is for %s but entry %s is for %s", errRefused, csr.ID, e.ID, e.SPIFFEID)
	}
	svid, err := s.cfg.CA.SignX509SVID(ctx, csr, ca.SVIDParams{TTL: e.X509TTL, DNSNames: e.DNSNames, EntryID: e.ID})
	if errors.Is(err, ca.ErrInvalidCSR) {
		return nil, fmt.Errorf("%w: %v", errRefused, err)
	}
	return svid, err
}

// authorizedEntry reads the entry and checks the agent may have it. The
// same refusal covers "no such entry" and "not yours", so an agent cannot
// probe other agents' entry IDs.
func (s *Server) authorizedEntry(ctx context.Context, z *authorizer, id string) (store.Entry, error) {
	if id == "" {
		return store.Entry{}, fmt.Errorf("%w: entry_id is empty", errRefused)
	}
	if len(id) > 128 {
		return store.Entry{}, fmt.Errorf("%w: entry_id longer than 128 bytes", errRefused)
	}
	notYours := fmt.Errorf("%w: entry %s does not exist or is not authorized for agent %s", errRefused, id, z.agentID)
	e, err := s.cfg.Store.GetEntry(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Entry{}, notYours
	}
	if err != nil {
		return store.Entry{}, fmt.Errorf("get entry %s: %w", id, err)
	}
	allowed, err := z.allowed(ctx, e)
	if err != nil {
		return store.Entry{}, err
	}
	if !allowed {
		return store.Entry{}, notYours
	}
	return e, nil
}

// MintJWTSVID mints a JWT-SVID for an entry the agent is authorized for,
// with the entry's JWT TTL.
func (s *Server) MintJWTSVID(ctx context.Context, req *nodev1.MintJWTSVIDRequest) (*nodev1.MintJWTSVIDResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	aud := req.GetAudience()
	if len(aud) == 0 || len(aud) > MaxAudiences {
		return nil, status.Errorf(codes.InvalidArgument, "mint jwt-svid: want 1 to %d audiences, got %d", MaxAudiences, len(aud))
	}
	for i, a := range aud {
		if a == "" || len(a) > 1024 {
			return nil, status.Errorf(codes.InvalidArgument, "mint jwt-svid: audience[%d] is empty or longer than 1024 bytes", i)
		}
	}
	e, err := s.authorizedEntry(ctx, s.authorizer(c.agent), req.GetEntryId())
	if errors.Is(err, errRefused) {
		s.m.signed.WithLabelValues("jwt", "refused").Inc()
		s.log.WarnContext(ctx, "jwt-svid refused", "agent_id", c.id.String(), "entry_id", truncate(req.GetEntryId(), 128), "error", err)
		return nil, status.Error(codes.PermissionDenied, "mint jwt-svid: "+err.Error())
	}
	if err != nil {
		s.m.signed.WithLabelValues("jwt", "error").Inc()
		s.log.ErrorContext(ctx, "authorize jwt-svid", "agent_id", c.id.String(), "error", err)
		return nil, status.Error(codes.Unavailable, "mint jwt-svid: cannot check the entry, try again")
	}
	id, err := spiffeid.FromString(e.SPIFFEID)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "mint jwt-svid: entry %s holds a bad SPIFFE ID", e.ID)
	}
	token, err := s.cfg.CA.MintJWTSVID(ctx, id, ca.JWTParams{Audience: aud, TTL: e.JWTTTL})
	if err != nil {
		s.m.signed.WithLabelValues("jwt", "error").Inc()
		s.log.ErrorContext(ctx, "mint jwt-svid", "agent_id", c.id.String(), "entry_id", e.ID, "error", err)
		return nil, status.Error(codes.Unavailable, "mint jwt-svid: the CA could not sign, try again")
	}
	parsed, err := jwtsvid.ParseInsecure(token, aud)
	if err != nil {
		return nil, status.Error(codes.Internal, "mint jwt-svid: the CA minted a token it cannot parse")
	}
	s.m.signed.WithLabelValues("jwt", "ok").Inc()
	s.audit(ctx, c.id.String(), "jwt.mint", e.SPIFFEID, map[string]any{"entry_id": e.ID, "audience": aud, "expires_at": parsed.Expiry})
	return &nodev1.MintJWTSVIDResponse{Token: token, ExpiresAt: timestamppb.New(parsed.Expiry)}, nil
}
