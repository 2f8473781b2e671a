package adminclient

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
)

// probeTimeout bounds the first connection attempt, so that a missing CA is
// reported at once rather than on the first call's deadline.
const probeTimeout = 3 * time.Second

// Dial connects to the admin API on a local unix socket. It checks first
// that something listens there and otherwise fails with a message that says
// what to start. Close the returned connection when done.
func Dial(ctx context.Context, socket string) (adminv1.AdminClient, *grpc.ClientConn, error) {
	abs, err := filepath.Abs(socket)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %q: %w", socket, err)
	}
	d := net.Dialer{Timeout: probeTimeout}
	probe, err := d.DialContext(ctx, "unix", abs)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the Sigil admin socket at %s: is `sigil dev` or `sigil ca run` running? (%w)", abs, err)
	}
	probe.Close()
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", abs, err)
	}
	return adminv1.NewAdminClient(conn), conn, nil
}
