package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/unixsock"
)

const adminServerFlag = "server"

// flagOrEnv is a persistent flag's value: the flag when given, else its
// environment twin, else the flag's default.
func flagOrEnv(cmd *cobra.Command, name string) string {
	f := cmd.Flag(name)
	if f != nil && f.Changed {
		return f.Value.String()
	}
	if v, ok := os.LookupEnv(envName(name)); ok {
		return v
	}
	if f != nil {
		return f.Value.String()
	}
	return ""
}

// dialAdminRemote connects to the admin API a CA serves on its server
// address, over mTLS with the X509-SVID the local agent gives this user.
// The CA must present spiffe://TD/sigil/ca of the SVID's trust domain,
// verified against the bundle the agent serves; the CA admits the SVID
// only when its entry is an admin entry.
func dialAdminRemote(cmd *cobra.Command, server string) (adminv1.AdminClient, func(), error) {
	host, port, err := net.SplitHostPort(server)
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		return nil, nil, usageErrorf("--server %q: want the CA's server address as host:port, e.g. ca.example.org:8443", server)
	}
	sock := os.Getenv(spiffeSocketEnv)
	if sock == "" {
		sock = defaultSocket()
	}
	path, err := unixsock.Path(sock)
	if err != nil {
		return nil, nil, usageErrorf("%s: %w", spiffeSocketEnv, err)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	if err := unixsock.Probe(ctx, path); err != nil {
		return nil, nil, fmt.Errorf("--server needs this user's admin X509-SVID from a local Sigil agent, and none answers at %s: %w; "+
			"point %s at the agent's Workload API socket", path, err, spiffeSocketEnv)
	}
	src, err := gsw.NewX509Source(ctx, gsw.WithClientOptions(gsw.WithAddr("unix://"+path)))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("the agent at %s gave this user (uid %d) no X509-SVID within 10s: register an entry with admin: true for it", path, os.Getuid())
		}
		return nil, nil, fmt.Errorf("workload api at %s: %w", path, err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("workload api at %s: %w", path, err)
	}
	caID, err := spiffeid.FromSegments(svid.ID.TrustDomain(), "sigil", "ca")
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	conf := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(caID))
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("--server %s: %w", server, err)
	}
	return adminv1.NewAdminClient(conn), func() { conn.Close(); src.Close() }, nil
}
