package admin

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// maxBundleBytes bounds a bundle document given to SetBundle.
const maxBundleBytes = 1 << 20

// caller returns the authenticated actor, or PermissionDenied when the
// server was run without its interceptor: the API fails closed.
func caller(ctx context.Context) (string, error) {
	if a, ok := actorFrom(ctx); ok {
		return a, nil
	}
	return "", status.Error(codes.PermissionDenied, "admin api: caller not authenticated")
}

// CreateEntries creates every entry of the batch or none.
func (s *Server) CreateEntries(ctx context.Context, req *adminv1.CreateEntriesRequest) (*adminv1.CreateEntriesResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetEntries()) == 0 {
		return nil, invalid("entries", "at least one entry is required")
	}
	if len(req.GetEntries()) > MaxBatch {
		return nil, invalid("entries", "at most %d entries per call", MaxBatch)
	}
	in := make([]store.Entry, len(req.GetEntries()))
	for i, e := range req.GetEntries() {
		prefix := fmt.Sprintf("entries[%d]", i)
		if e.GetId() != "" {
			return nil, invalid(prefix+".id", "set by the CA; leave it empty")
		}
		if in[i], err = s.entryFromProto(prefix, e); err != nil {
			return nil, err
		}
		in[i].Revision = 0
	}
	out, err := s.store.CreateEntries(ctx, actor, in)
	if err != nil {
		what := "an entry with the same spiffe_id, parent_id and selectors"
		if len(in) == 1 {
			what = fmt.Sprintf("entry for %s under %s with these selectors", in[0].SPIFFEID, in[0].ParentID)
		}
		return nil, s.fail(ctx, "create entries", what, err)
	}
	for _, e := range out {
		s.log.InfoContext(ctx, "entry created", "actor", actor, "entry_id", e.ID, "spiffe_id", e.SPIFFEID)
	}
	return &adminv1.CreateEntriesResponse{Entries: entriesToProto(out)}, nil
}

// UpdateEntry replaces an entry.
func (s *Server) UpdateEntry(ctx context.Context, req *adminv1.UpdateEntryRequest) (*adminv1.UpdateEntryResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := entryID("entry.id", req.GetEntry().GetId()); err != nil {
		return nil, err
	}
	e, err := s.entryFromProto("entry", req.GetEntry())
	if err != nil {
		return nil, err
	}
	if e.Revision < 0 {
		return nil, invalid("entry.revision", "negative")
	}
	out, err := s.store.UpdateEntry(ctx, actor, e)
	if err != nil {
		return nil, s.fail(ctx, "update entry", fmt.Sprintf("entry %q", e.ID), err)
	}
	s.log.InfoContext(ctx, "entry updated", "actor", actor, "entry_id", out.ID, "spiffe_id", out.SPIFFEID)
	return &adminv1.UpdateEntryResponse{Entry: apiconv.EntryToProto(out)}, nil
}

// DeleteEntry deletes an entry and returns what it was.
func (s *Server) DeleteEntry(ctx context.Context, req *adminv1.DeleteEntryRequest) (*adminv1.DeleteEntryResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := entryID("id", req.GetId()); err != nil {
		return nil, err
	}
	out, err := s.store.DeleteEntry(ctx, actor, req.GetId())
	if err != nil {
		return nil, s.fail(ctx, "delete entry", fmt.Sprintf("entry %q", req.GetId()), err)
	}
	s.log.InfoContext(ctx, "entry deleted", "actor", actor, "entry_id", out.ID, "spiffe_id", out.SPIFFEID)
	return &adminv1.DeleteEntryResponse{Entry: apiconv.EntryToProto(out)}, nil
}

// GetEntry returns one entry.
func (s *Server) GetEntry(ctx context.Context, req *adminv1.GetEntryRequest) (*adminv1.GetEntryResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	if err := entryID("id", req.GetId()); err != nil {
		return nil, err
	}
	e, err := s.store.GetEntry(ctx, req.GetId())
	if err != nil {
		return nil, s.fail(ctx, "get entry", fmt.Sprintf("entry %q", req.GetId()), err)
	}
	return &adminv1.GetEntryResponse{Entry: apiconv.EntryToProto(e)}, nil
}

// ListEntries returns a page of the entries matching the filters, ordered
// by ID.
func (s *Server) ListEntries(ctx context.Context, req *adminv1.ListEntriesRequest) (*adminv1.ListEntriesResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	var f store.EntryFilter
	for _, x := range []struct {
		field, raw string
		dst        *string
	}{
		{"parent_id", req.GetParentId(), &f.ParentID},
		{"spiffe_id", req.GetSpiffeId(), &f.SPIFFEID},
	} {
		if x.raw == "" {
			continue
		}
		id, err := spiffeid.FromString(x.raw)
		if err != nil {
			return nil, invalid(x.field, "%q is not a SPIFFE ID: %v", x.raw, err)
		}
		*x.dst = id.String()
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	filter := f.ParentID + "\x00" + f.SPIFFEID
	if f.AfterID, err = s.pager.after(req.GetPageToken(), "entries", filter); err != nil {
		return nil, err
	}
	f.Limit = size + 1
	es, err := s.store.ListEntries(ctx, f)
	if err != nil {
		return nil, s.fail(ctx, "list entries", "entries", err)
	}
	out := entriesToProto(es)
	out, more := page(out, size)
	resp := &adminv1.ListEntriesResponse{Entries: out}
	if more {
		resp.NextPageToken = s.pager.token("entries", filter, out[len(out)-1].GetId())
	}
	return resp, nil
}

// ensureTokenAlias makes the node-alias entry for id that agents attested
// with a token naming id match (selector join_token:spiffe_id:<id>),
// unless it exists.
func (s *Server) ensureTokenAlias(ctx context.Context, actor string, id spiffeid.ID) error {
	caID := sigilid.CA(s.td).String()
	sel := nodeattest.SPIFFEIDSelector(id.String())
	have, err := s.store.ListEntries(ctx, store.EntryFilter{ParentID: caID, SPIFFEID: id.String()})
	if err != nil {
		return err
	}
	for _, e := range have {
		if len(e.Selectors) == 1 && e.Selectors[0] == sel {
			return nil
		}
	}
	_, err = s.store.CreateEntries(ctx, actor, []store.Entry{{SPIFFEID: id.String(), ParentID: caID, Selectors: []selector.Selector{sel}}})
	if errors.Is(err, store.ErrDuplicate) {
		return nil
	}
	return err
}

// CreateJoinToken makes a one-time join token of 32 random bytes (hex).
func (s *Server) CreateJoinToken(ctx context.Context, req *adminv1.CreateJoinTokenRequest) (*adminv1.CreateJoinTokenResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	d, err := ttl("ttl", req.GetTtl(), MaxTokenTTL)
	if err != nil {
		return nil, err
	}
	if d == 0 {
		d = s.tokenTTL
	}
	var raw [32]byte
	if _, err := io.ReadFull(s.rand, raw[:]); err != nil {
		return nil, s.fail(ctx, "create join token", "join token", fmt.Errorf("read randomness: %w", err))
	}
	tok := store.JoinToken{Token: hex.EncodeToString(raw[:]), ExpiresAt: s.now().Add(d).UTC()}
	if req.GetSpiffeId() != "" {
		id, err := s.memberID("spiffe_id", req.GetSpiffeId())
		if err != nil {
			return nil, err
		}
		if sigilid.IsReserved(id) {
			return nil, invalid("spiffe_id", "%s is reserved for Sigil's own identities (paths under %s/)", id, sigilid.Reserved)
		}
		// The alias first: a token whose alias is missing would attest an
		// agent that gets nothing; an alias without its token matches no
		// agent.
		if err := s.ensureTokenAlias(ctx, actor, id); err != nil {
			return nil, s.fail(ctx, "create join token", "node alias "+id.String(), err)
		}
		tok.SPIFFEID = id.String()
	}
	if err := s.store.CreateJoinToken(ctx, actor, tok); err != nil {
		return nil, s.fail(ctx, "create join token", "join token", err)
	}
	s.log.InfoContext(ctx, "join token created", "actor", actor, "expires_at", tok.ExpiresAt, "spiffe_id", tok.SPIFFEID)
	return &adminv1.CreateJoinTokenResponse{Token: tok.Token, ExpiresAt: timestamppb.New(tok.ExpiresAt)}, nil
}

// ListAgents returns a page of the attested agents, ordered by ID.
func (s *Server) ListAgents(ctx context.Context, req *adminv1.ListAgentsRequest) (*adminv1.ListAgentsResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := s.pager.after(req.GetPageToken(), "agents", "")
	if err != nil {
		return nil, err
	}
	as, err := s.store.ListAgents(ctx, store.AgentFilter{AfterID: after, Limit: size + 1})
	if err != nil {
		return nil, s.fail(ctx, "list agents", "agents", err)
	}
	out := make([]*adminv1.Agent, len(as))
	for i, a := range as {
		out[i] = agentToProto(a)
	}
	out, more := page(out, size)
	resp := &adminv1.ListAgentsResponse{Agents: out}
	if more {
		resp.NextPageToken = s.pager.token("agents", "", out[len(out)-1].GetId())
	}
	return resp, nil
}

// EvictAgent deletes an agent, which must then attest again.
func (s *Server) EvictAgent(ctx context.Context, req *adminv1.EvictAgentRequest) (*adminv1.EvictAgentResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := s.memberID("id", req.GetId())
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteAgent(ctx, actor, id.String()); err != nil {
		return nil, s.fail(ctx, "evict agent", fmt.Sprintf("agent %s", id), err)
	}
	s.log.InfoContext(ctx, "agent evicted", "actor", actor, "agent_id", id.String())
	return &adminv1.EvictAgentResponse{}, nil
}

// BanAgent marks an agent banned and forgets its SVID serial, so it can
// neither renew nor attest again.
func (s *Server) BanAgent(ctx context.Context, req *adminv1.BanAgentRequest) (*adminv1.BanAgentResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id, err := s.memberID("id", req.GetId())
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("agent %s", id)
	a, err := s.store.GetAgent(ctx, id.String())
	if err != nil {
		return nil, s.fail(ctx, "ban agent", what, err)
	}
	a.Banned = true
	a.Serial = ""
	a, err = s.store.UpdateAgent(ctx, actor, a)
	if err != nil {
		return nil, s.fail(ctx, "ban agent", what, err)
	}
	s.log.InfoContext(ctx, "agent banned", "actor", actor, "agent_id", id.String())
	return &adminv1.BanAgentResponse{Agent: agentToProto(a)}, nil
}

// GetBundle returns a trust domain's bundle, our own by default.
func (s *Server) GetBundle(ctx context.Context, req *adminv1.GetBundleRequest) (*adminv1.GetBundleResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	td := s.td
	if req.GetTrustDomain() != "" {
		var err error
		if td, err = trustDomain("trust_domain", req.GetTrustDomain()); err != nil {
			return nil, err
		}
	}
	b, err := s.store.GetBundle(ctx, td.Name())
	if err != nil {
		return nil, s.fail(ctx, "get bundle", fmt.Sprintf("bundle of %s", td.Name()), err)
	}
	return &adminv1.GetBundleResponse{Bundle: apiconv.BundleToProto(b)}, nil
}

// ListBundles returns a page of the stored bundles, ours and federated
// ones, ordered by trust domain.
func (s *Server) ListBundles(ctx context.Context, req *adminv1.ListBundlesRequest) (*adminv1.ListBundlesResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := s.pager.after(req.GetPageToken(), "bundles", "")
	if err != nil {
		return nil, err
	}
	// Federated trust domains are few: the store lists them all, and the
	// page is cut here, in byte order whatever the database's collation.
	bs, err := s.store.ListBundles(ctx)
	if err != nil {
		return nil, s.fail(ctx, "list bundles", "bundles", err)
	}
	slices.SortFunc(bs, func(a, b store.Bundle) int { return strings.Compare(a.TrustDomain, b.TrustDomain) })
	var out []*typesv1.Bundle
	for _, b := range bs {
		if b.TrustDomain > after && len(out) <= size {
			out = append(out, apiconv.BundleToProto(b))
		}
	}
	out, more := page(out, size)
	resp := &adminv1.ListBundlesResponse{Bundles: out}
	if more {
		resp.NextPageToken = s.pager.token("bundles", "", out[len(out)-1].GetTrustDomain())
	}
	return resp, nil
}

// SetBundle creates or replaces a federated trust domain's bundle from a
// PEM or SPIFFE bundle document. Our own bundle belongs to the CA.
func (s *Server) SetBundle(ctx context.Context, req *adminv1.SetBundleRequest) (*adminv1.SetBundleResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	td, err := s.foreignTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	if len(req.GetData()) == 0 {
		return nil, invalid("data", "empty bundle document")
	}
	if len(req.GetData()) > maxBundleBytes {
		return nil, invalid("data", "bundle document larger than %d bytes", maxBundleBytes)
	}
	b, err := parseBundle(td, req.GetFormat(), req.GetData())
	if err != nil {
		return nil, err
	}
	if b.Sequence == 0 {
		prev, err := s.store.GetBundle(ctx, td.Name())
		switch {
		case err == nil:
			b.Sequence = prev.Sequence + 1
		case errors.Is(err, store.ErrNotFound):
			b.Sequence = 1
		default:
			return nil, s.fail(ctx, "set bundle", fmt.Sprintf("bundle of %s", td.Name()), err)
		}
	}
	if err := s.store.SetBundle(ctx, actor, b); err != nil {
		return nil, s.fail(ctx, "set bundle", fmt.Sprintf("bundle of %s", td.Name()), err)
	}
	s.log.InfoContext(ctx, "bundle set", "actor", actor, "trust_domain", td.Name(), "x509_authorities", len(b.X509Authorities), "jwt_authorities", len(b.JWTAuthorities))
	return &adminv1.SetBundleResponse{Bundle: apiconv.BundleToProto(b)}, nil
}

// DeleteBundle forgets a federated trust domain's bundle.
func (s *Server) DeleteBundle(ctx context.Context, req *adminv1.DeleteBundleRequest) (*adminv1.DeleteBundleResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	td, err := s.foreignTrustDomain(req.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteBundle(ctx, actor, td.Name()); err != nil {
		return nil, s.fail(ctx, "delete bundle", fmt.Sprintf("bundle of %s", td.Name()), err)
	}
	s.log.InfoContext(ctx, "bundle deleted", "actor", actor, "trust_domain", td.Name())
	return &adminv1.DeleteBundleResponse{}, nil
}

func (s *Server) foreignTrustDomain(raw string) (spiffeid.TrustDomain, error) {
	td, err := trustDomain("trust_domain", raw)
	if err != nil {
		return td, err
	}
	if td == s.td {
		return td, invalid("trust_domain", "%s is our own trust domain; its bundle is kept by the CA", td)
	}
	return td, nil
}

// parseBundle reads a bundle document with go-spiffe.
func parseBundle(td spiffeid.TrustDomain, format adminv1.BundleFormat, data []byte) (store.Bundle, error) {
	out := store.Bundle{TrustDomain: td.Name()}
	switch format {
	case adminv1.BundleFormat_BUNDLE_FORMAT_PEM:
		xb, err := x509bundle.Parse(td, data)
		if err != nil {
			return out, invalid("data", "not a PEM bundle: %v", err)
		}
		for _, c := range xb.X509Authorities() {
			out.X509Authorities = append(out.X509Authorities, c.Raw)
		}
	case adminv1.BundleFormat_BUNDLE_FORMAT_SPIFFE:
		sb, err := spiffebundle.Parse(td, data)
		if err != nil {
			return out, invalid("data", "not a SPIFFE bundle: %v", err)
		}
		for _, c := range sb.X509Authorities() {
			out.X509Authorities = append(out.X509Authorities, c.Raw)
		}
		for kid, key := range sb.JWTAuthorities() {
			der, err := x509.MarshalPKIXPublicKey(key)
			if err != nil {
				return out, invalid("data", "jwt authority %q: %v", kid, err)
			}
			out.JWTAuthorities = append(out.JWTAuthorities, store.JWTAuthority{KeyID: kid, PublicKey: der})
		}
		sortJWT(out.JWTAuthorities)
		if h, ok := sb.RefreshHint(); ok {
			if h < 0 {
				return out, invalid("data", "negative spiffe_refresh_hint")
			}
			out.RefreshHint = h
		}
		if n, ok := sb.SequenceNumber(); ok {
			out.Sequence = n
		}
	default:
		return out, invalid("format", "must be BUNDLE_FORMAT_PEM or BUNDLE_FORMAT_SPIFFE, got %s", format)
	}
	if len(out.X509Authorities) == 0 && len(out.JWTAuthorities) == 0 {
		return out, invalid("data", "the bundle holds no authority")
	}
	for _, der := range out.X509Authorities {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return out, invalid("data", "x509 authority: %v", err)
		}
		if !c.IsCA {
			return out, invalid("data", "x509 authority %q is not a CA certificate", c.Subject.String())
		}
	}
	return out, nil
}

func sortJWT(as []store.JWTAuthority) {
	slices.SortFunc(as, func(a, b store.JWTAuthority) int { return strings.Compare(a.KeyID, b.KeyID) })
}

// CAStatus reports the CA's key journal.
func (s *Server) CAStatus(ctx context.Context, _ *adminv1.CAStatusRequest) (*adminv1.CAStatusResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	st, err := s.auth.Status(ctx)
	if err != nil {
		return nil, s.failCA(ctx, "ca status", "ca status", err)
	}
	out := &adminv1.CAStatusResponse{TrustDomain: st.TrustDomain, Rekey: rekeyToProto(st.Rekey), LastRekey: rekeyToProto(st.LastRekey)}
	for _, r := range st.UpstreamRoots {
		out.UpstreamRoots = append(out.UpstreamRoots, r.Raw)
	}
	out.Upstream = upstreamToProto(st.Upstream)
	for _, k := range st.Keys {
		out.Keys = append(out.Keys, keyToProto(k))
	}
	for _, r := range st.Roots {
		out.Roots = append(out.Roots, rootToProto(r))
	}
	return out, nil
}

// RotateRoot starts a root rotation.
func (s *Server) RotateRoot(ctx context.Context, _ *adminv1.RotateRootRequest) (*adminv1.RotateRootResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	rr, ok := s.auth.(interface {
		RotateRoot(ctx context.Context) (ca.RootStatus, error)
	})
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this CA cannot rotate its root")
	}
	r, err := rr.RotateRoot(ctx)
	for _, pre := range []error{ca.ErrRootRotationUnsupported, ca.ErrRootRotationInProgress, ca.ErrRootRotationReplicas} {
		if errors.Is(err, pre) {
			// These messages name no secret: key IDs, times, what to do.
			return nil, status.Error(codes.FailedPrecondition, "rotate root: "+err.Error())
		}
	}
	if err != nil {
		return nil, s.failCA(ctx, "ca root rotate", "root", err)
	}
	s.audit(ctx, actor, "ca.root.rotate", r.ID, ca.KeyKind("root"))
	return &adminv1.RotateRootResponse{Root: rootToProto(r)}, nil
}

// PrepareCA makes and publishes the next signing key of a kind.
func (s *Server) PrepareCA(ctx context.Context, req *adminv1.PrepareCARequest) (*adminv1.PrepareCAResponse, error) {
	k, err := s.rotationStep(ctx, req.GetKind(), "prepare", "%s key", s.auth.Prepare)
	if err != nil {
		return nil, err
	}
	return &adminv1.PrepareCAResponse{Key: k}, nil
}

// ActivateCA makes the prepared key of a kind the signing one.
func (s *Server) ActivateCA(ctx context.Context, req *adminv1.ActivateCARequest) (*adminv1.ActivateCAResponse, error) {
	k, err := s.rotationStep(ctx, req.GetKind(), "activate", "prepared %s key", s.auth.Activate)
	if err != nil {
		return nil, err
	}
	return &adminv1.ActivateCAResponse{Key: k}, nil
}

// rotationStep runs one step of a key rotation (prepare or activate) for
// the caller, audits it as "ca.<op>" and returns the key it touched. what
// formats the kind for the error message.
func (s *Server) rotationStep(ctx context.Context, pk adminv1.KeyKind, op, what string,
	step func(context.Context, ca.KeyKind) (ca.KeyStatus, error)) (*adminv1.CAKey, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	kind, err := kindFromProto(pk)
	if err != nil {
		return nil, err
	}
	k, err := step(ctx, kind)
	if err != nil {
		return nil, s.failCA(ctx, "ca "+op, fmt.Sprintf(what, kind), err)
	}
	s.audit(ctx, actor, "ca."+op, k.ID, kind)
	return keyToProto(k), nil
}

// TaintCA marks a key tainted: everything it signed is re-issued.
func (s *Server) TaintCA(ctx context.Context, req *adminv1.TaintCARequest) (*adminv1.TaintCAResponse, error) {
	actor, kind, err := s.keyOp(ctx, req.GetKind(), req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := s.auth.Taint(ctx, kind, req.GetKeyId()); err != nil {
		return nil, s.failCA(ctx, "ca taint", fmt.Sprintf("%s key %q", kind, req.GetKeyId()), err)
	}
	s.audit(ctx, actor, "ca.taint", req.GetKeyId(), kind)
	return &adminv1.TaintCAResponse{}, nil
}

// RevokeCA removes a tainted key from the bundle.
func (s *Server) RevokeCA(ctx context.Context, req *adminv1.RevokeCARequest) (*adminv1.RevokeCAResponse, error) {
	actor, kind, err := s.keyOp(ctx, req.GetKind(), req.GetKeyId())
	if err != nil {
		return nil, err
	}
	if err := s.auth.Revoke(ctx, kind, req.GetKeyId()); err != nil {
		return nil, s.failCA(ctx, "ca revoke", fmt.Sprintf("%s key %q", kind, req.GetKeyId()), err)
	}
	s.audit(ctx, actor, "ca.revoke", req.GetKeyId(), kind)
	return &adminv1.RevokeCAResponse{}, nil
}

// RevokeSVID revokes one X.509-SVID by serial, or, with only a SPIFFE ID,
// every X.509-SVID of that ID issued before now. The store writes the
// audit event (svid.revoke, svid.revoke_id) with the caller as actor in the
// same transaction. Either starts the CA's re-key (see ca/rekey.go).
func (s *Server) RevokeSVID(ctx context.Context, req *adminv1.RevokeSVIDRequest) (*adminv1.RevokeSVIDResponse, error) {
	actor, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	serial := strings.ReplaceAll(strings.TrimPrefix(req.GetSerial(), "serial="), ":", "")
	switch {
	case serial == "" && req.GetSpiffeId() == "":
		return nil, invalid("serial", "required (or spiffe_id alone)")
	case len(serial) > 64:
		return nil, invalid("serial", "longer than 64 hex digits")
	}
	if req.GetSpiffeId() != "" {
		if _, err := s.memberID("spiffe_id", req.GetSpiffeId()); err != nil {
			return nil, err
		}
	}
	if serial == "" {
		id := req.GetSpiffeId()
		if err := s.auth.RevokeSPIFFEID(ctx, actor, id); err != nil {
			if errors.Is(err, store.ErrLimit) {
				return nil, status.Errorf(codes.ResourceExhausted, "spiffe id %s: %v: taint and revoke the issuing keys instead", id, err)
			}
			return nil, s.failCA(ctx, "svid revoke", "spiffe id "+id, err)
		}
		s.log.InfoContext(ctx, "svids of a spiffe id revoked", "actor", actor, "spiffe_id", id)
		return &adminv1.RevokeSVIDResponse{}, nil
	}
	if err := s.auth.RevokeSVID(ctx, actor, serial, req.GetSpiffeId()); err != nil {
		if errors.Is(err, store.ErrLimit) {
			return nil, status.Errorf(codes.ResourceExhausted, "svid %s: %v: taint and revoke the issuing key instead", serial, err)
		}
		return nil, s.failCA(ctx, "svid revoke", fmt.Sprintf("svid %s", serial), err)
	}
	s.log.InfoContext(ctx, "svid revoked", "actor", actor, "serial", serial, "spiffe_id", req.GetSpiffeId())
	return &adminv1.RevokeSVIDResponse{}, nil
}

func (s *Server) keyOp(ctx context.Context, k adminv1.KeyKind, keyID string) (string, ca.KeyKind, error) {
	actor, err := caller(ctx)
	if err != nil {
		return "", "", err
	}
	kind, err := kindFromProto(k)
	if err != nil {
		return "", "", err
	}
	if keyID == "" {
		return "", "", invalid("key_id", "required (see sigil ca status)")
	}
	if len(keyID) > 256 {
		return "", "", invalid("key_id", "longer than 256 bytes")
	}
	return actor, kind, nil
}

// audit records a CA key operation, which the store does not see. The
// operation is done by now, so the record outlives a canceled request and
// a failure to write it is logged, not returned.
func (s *Server) audit(ctx context.Context, actor, action, keyID string, kind ca.KeyKind) {
	details, _ := json.Marshal(map[string]string{"kind": string(kind)})
	ev := store.AuditEvent{Time: s.now().UTC(), Actor: actor, Action: action, Target: keyID, Details: string(details)}
	if _, err := s.store.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		s.log.ErrorContext(ctx, "write audit event", "action", action, "key_id", keyID, "error", err)
	}
	s.log.InfoContext(ctx, "ca key operation", "actor", actor, "action", action, "key_id", keyID, "kind", string(kind))
}

// ListAudit pages through the audit trail by event ID.
func (s *Server) ListAudit(ctx context.Context, req *adminv1.ListAuditRequest) (*adminv1.ListAuditResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	if req.GetAfterId() < 0 {
		return nil, invalid("after_id", "negative")
	}
	limit := int(req.GetLimit())
	switch {
	case limit < 0:
		return nil, invalid("limit", "negative")
	case limit == 0:
		limit = DefaultAuditLimit
	case limit > DefaultAuditLimit:
		return nil, invalid("limit", "%d is above the maximum %d: ask for at most %d and continue after the last event's id", limit, DefaultAuditLimit, DefaultAuditLimit)
	}
	evs, err := s.store.ListAudit(ctx, store.AuditFilter{AfterID: req.GetAfterId(), Limit: limit})
	if err != nil {
		return nil, s.fail(ctx, "list audit", "audit events", err)
	}
	out := make([]*adminv1.AuditEvent, len(evs))
	for i, ev := range evs {
		out[i] = auditToProto(ev)
	}
	// The caller continues after the last event it got, so a page cut
	// short by bytes needs no token.
	out, _ = page(out, limit)
	return &adminv1.ListAuditResponse{Events: out}, nil
}

// page cuts items, fetched with one more than size, to at most size items
// and MaxPageBytes of encoding (at least one item), and reports whether
// more follow.
func page[M proto.Message](items []M, size int) ([]M, bool) {
	total := 0
	for i, m := range items {
		if i == size {
			return items[:i], true
		}
		total += proto.Size(m) + 6 // the item, its length and its tag
		if i > 0 && total > MaxPageBytes {
			return items[:i], true
		}
	}
	return items, false
}
