package adminclient

import (
	"context"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/unixsock"
)

// Dial connects to the admin API on a local unix socket, given as a path or
// as unix:///path. It checks first that something listens there and
// otherwise fails with a message that says what to start; the error then
// wraps unixsock.ErrNotListening or unixsock.ErrPermission. Close the
// returned connection when done.
func Dial(ctx context.Context, socket string) (adminv1.AdminClient, *grpc.ClientConn, error) {
	abs, err := unixsock.Path(socket)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := unixsock.Probe(ctx, abs); err != nil {
		switch {
		case errors.Is(err, unixsock.ErrNotListening):
			return nil, nil, fmt.Errorf("no Sigil CA admin API: %w; start one with `sigil dev` (development) or `sigil ca run --config ca.yaml`, or point --admin-socket (env SIGIL_ADMIN_SOCKET) at its admin socket", err)
		case errors.Is(err, unixsock.ErrPermission):
			return nil, nil, fmt.Errorf("the CA admin socket refuses this user (uid %d): %w; run as the CA's user or one in the socket's group", os.Getuid(), err)
		}
		return nil, nil, fmt.Errorf("cannot reach the Sigil CA admin socket: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", abs, err)
	}
	return adminv1.NewAdminClient(conn), conn, nil
}
