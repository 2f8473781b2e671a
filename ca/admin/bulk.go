package admin

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca/store"
)

// MaxStreamEntries bounds the entries of one CreateEntriesStream call,
// which the CA holds in memory until the client is done (about 1 KB each).
const MaxStreamEntries = 1_000_000

// CreateEntriesStream collects the entries of every message, checking each
// as it arrives, and creates them all in one store transaction once the
// client closes its side: all or none. No message may hold more than
// MaxBatch entries, nor the stream more than MaxStreamEntries.
func (s *Server) CreateEntriesStream(stream adminv1.Admin_CreateEntriesStreamServer) error {
	ctx := stream.Context()
	actor, err := caller(ctx)
	if err != nil {
		return err
	}
	var in []store.Entry
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(req.GetEntries()) > MaxBatch {
			return invalid("entries", "at most %d entries per message (message after entry %d)", MaxBatch, len(in))
		}
		if len(in)+len(req.GetEntries()) > MaxStreamEntries {
			return invalid("entries", "at most %d entries per stream", MaxStreamEntries)
		}
		for _, e := range req.GetEntries() {
			prefix := fmt.Sprintf("entries[%d]", len(in))
			if e.GetId() != "" {
				return invalid(prefix+".id", "set by the CA; leave it empty")
			}
			se, err := s.entryFromProto(prefix, e)
			if err != nil {
				return err
			}
			se.Revision = 0
			in = append(in, se)
		}
	}
	if len(in) == 0 {
		return invalid("entries", "at least one entry is required")
	}
	out, err := s.store.CreateEntries(ctx, actor, in)
	if err != nil {
		var be *store.BatchError
		if errors.As(err, &be) && be.Index >= 0 && be.Index < len(in) {
			e := in[be.Index]
			what := fmt.Sprintf("entries[%d] (%s under %s)", be.Index, e.SPIFFEID, e.ParentID)
			switch {
			case errors.Is(err, store.ErrDuplicate):
				return status.Errorf(codes.AlreadyExists, "%s: an entry with the same spiffe_id, parent_id and selectors already exists or comes earlier in the stream; nothing was created", what)
			case errors.Is(err, store.ErrInvalid):
				return status.Errorf(codes.InvalidArgument, "%s rejected: %v; nothing was created", what, be.Err)
			}
		}
		return s.fail(ctx, "create entries", fmt.Sprintf("one of the %d entries", len(in)), err)
	}
	s.log.InfoContext(ctx, "entries created", "actor", actor, "count", len(out),
		"first_revision", out[0].Revision, "last_revision", out[len(out)-1].Revision)
	return stream.SendAndClose(&adminv1.CreateEntriesStreamResponse{
		Created:       int64(len(out)),
		FirstRevision: out[0].Revision,
		LastRevision:  out[len(out)-1].Revision,
	})
}
