package admin

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/store"
)

// failCA is fail for the CA's key operations. The CA's errors that tell an
// operator what to do first are shown by their own text, never with the
// wrapped chain.
func (s *Server) failCA(ctx context.Context, op, what string, err error) error {
	if errors.Is(err, ca.ErrKeyNotFound) {
		return status.Errorf(codes.NotFound, "%s not found (see sigil ca status)", what)
	}
	for _, pre := range []error{ca.ErrNoPrepared, ca.ErrKeyActive, ca.ErrNotTainted, ca.ErrNotReady} {
		if errors.Is(err, pre) {
			return status.Errorf(codes.FailedPrecondition, "%s: %s", what, pre.Error())
		}
	}
	return s.fail(ctx, op, what, err)
}

// invalid is an InvalidArgument status naming the offending field.
func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

// fail turns an error from the store or the CA into a status. what names the
// object acted on in the client's words ("entry \"abc\""); op names the
// operation in the log. Unexpected errors are logged and reported with a
// generic message, so that no internal detail reaches the client.
func (s *Server) fail(ctx context.Context, op, what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s not found", what)
	case errors.Is(err, store.ErrDuplicate):
		return status.Errorf(codes.AlreadyExists, "%s already exists", what)
	case errors.Is(err, store.ErrConflict):
		return status.Errorf(codes.Aborted, "%s changed since it was read; read it again and retry", what)
	case errors.Is(err, store.ErrInvalid):
		// The store's checks name fields of the record, never internals.
		return status.Errorf(codes.InvalidArgument, "%s rejected: %v", what, err)
	case errors.Is(err, store.ErrExpired):
		return status.Errorf(codes.FailedPrecondition, "%s expired", what)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	s.log.ErrorContext(ctx, "admin operation failed", "op", op, "error", err)
	return status.Errorf(codes.Internal, "%s failed; see the CA's log", op)
}
