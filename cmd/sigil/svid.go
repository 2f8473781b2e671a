package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/atomicfile"
	"github.com/sigilhq/sigil/internal/unixsock"
)

// defaultSocket is where `sigil dev` serves the Workload API.
func defaultSocket() string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".sigil", "dev", "agent.sock")
}

// spiffeSocketEnv is the SPIFFE convention for the Workload API address,
// honoured by go-spiffe, SPIRE and spiffe-helper.
const spiffeSocketEnv = "SPIFFE_ENDPOINT_SOCKET"

// workloadFlags are the flags of commands that talk to the Workload API.
type workloadFlags struct {
	socket  string
	timeout time.Duration
	flag    *pflag.Flag
}

func (f *workloadFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", defaultSocket(),
		"Workload API socket of the agent, a path or unix:///path (env SIGIL_SOCKET, then "+spiffeSocketEnv+")")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 10*time.Second, "give up after this long")
	f.flag = cmd.Flags().Lookup("socket")
}

// address is the socket the user asked for: --socket, else SIGIL_SOCKET
// (applied to the flag by applyEnv), else SPIFFE_ENDPOINT_SOCKET, else the
// dev default.
func (f *workloadFlags) address() string {
	if f.flag != nil && !f.flag.Changed {
		if _, ok := os.LookupEnv(envName("socket")); !ok {
			if v := os.Getenv(spiffeSocketEnv); v != "" {
				return v
			}
		}
	}
	return f.socket
}

// client connects to the agent's Workload API, after checking that an agent
// listens there; its errors say what to do.
func (f *workloadFlags) client(ctx context.Context) (*workloadClient, context.Context, context.CancelFunc, error) {
	path, err := unixsock.Path(f.address())
	if err != nil {
		return nil, nil, nil, usageErrorf("--socket: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	if err := unixsock.Probe(ctx, path); err != nil {
		cancel()
		switch {
		case errors.Is(err, unixsock.ErrNotListening):
			return nil, nil, nil, fmt.Errorf("no Sigil agent: %w; start one with `sigil dev` (development) or `sigil agent run --config agent.yaml`, or point --socket (env %s) at its Workload API socket", err, spiffeSocketEnv)
		case errors.Is(err, unixsock.ErrPermission):
			return nil, nil, nil, fmt.Errorf("the agent's Workload API socket refuses this user (uid %d): %w; check the socket's directory and mode", os.Getuid(), err)
		}
		return nil, nil, nil, fmt.Errorf("cannot reach the Sigil agent: %w", err)
	}
	c, err := gsw.New(ctx, gsw.WithAddr("unix://"+path))
	if err != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("workload api at %s: %w", path, err)
	}
	return &workloadClient{Client: c, path: path, timeout: f.timeout}, ctx, func() { c.Close(); cancel() }, nil
}

// workloadClient is a Workload API client that knows where it connected,
// to say so in errors.
type workloadClient struct {
	*gsw.Client
	path    string
	timeout time.Duration
}

// explain turns an error of a Workload API call into one a person can act
// on, with an exit code.
func (c *workloadClient) explain(what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return withCode(exitUnavailable, fmt.Errorf("%s: the agent at %s did not answer within %s (--timeout)", what, c.path, c.timeout))
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	uid := os.Getuid()
	switch st.Code() {
	case codes.PermissionDenied:
		return withCode(exitDenied, fmt.Errorf("%s: the agent at %s has no identity for this process (uid %d): %s; register one, e.g. `sigil entry create --spiffe-id spiffe://TRUST-DOMAIN/NAME --selector unix:uid:%d`",
			what, c.path, uid, st.Message(), uid))
	case codes.Unauthenticated:
		return withCode(exitDenied, fmt.Errorf("%s: the agent at %s could not attest this process (uid %d): %s", what, c.path, uid, st.Message()))
	case codes.Unavailable:
		return withCode(exitUnavailable, fmt.Errorf("%s: the agent at %s is not ready: %s; check its log (is its CA reachable?)", what, c.path, st.Message()))
	case codes.DeadlineExceeded:
		return withCode(exitUnavailable, fmt.Errorf("%s: the agent at %s did not answer within %s (--timeout)", what, c.path, c.timeout))
	case codes.InvalidArgument:
		return fmt.Errorf("%s: %s", what, st.Message())
	}
	return fmt.Errorf("%s: %s: %s", what, strings.ToLower(st.Code().String()), st.Message())
}

func newSVIDCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "svid", Short: "Fetch this process's X509-SVIDs from the agent"}
	cmd.AddCommand(newSVIDFetchCmd(), newSVIDRevokeCmd())
	return cmd
}

// newSVIDRevokeCmd makes `svid revoke --serial S | --spiffe-id ID`, an admin
// call to the CA.
func newSVIDRevokeCmd() *cobra.Command {
	var serial, id string
	cmd := &cobra.Command{
		Use:   "revoke (--serial SERIAL [--spiffe-id ID] | --spiffe-id ID)",
		Short: "Revoke one X.509-SVID by serial, or every X.509-SVID of a SPIFFE ID issued until now (admin socket)",
		Long: "Revoke one X.509-SVID by serial: the CA's node and admin mTLS refuse it at once and\n" +
			"the CRLs the CA sends agents (and agents hand Envoy) list it until it expires.\n" +
			"SERIAL is hex, as `openssl x509 -noout -serial` prints it. --spiffe-id is recorded.\n" +
			"With --spiffe-id alone, every X.509-SVID of that ID issued until now is revoked: the\n" +
			"CA's mTLS refuses them, but no CRL lists them (the CA records no serials it signed).\n" +
			"The ID's entries keep minting new SVIDs: delete them first (sigil entry delete).\n" +
			"Either way the CA then re-keys: it publishes a next signing key, activates it, agents\n" +
			"re-mint every SVID and the old keys are revoked, so that go-spiffe peers and Envoy's\n" +
			"SPIFFE validator, which read no CRLs, refuse the revoked SVIDs too (seconds; watch\n" +
			"it with `sigil ca status`). See SECURITY.md (Revocation).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if serial == "" && id == "" {
				return errors.New("--serial or --spiffe-id is required")
			}
			return withAdmin(cmd, func(c adminv1.AdminClient) error {
				if _, err := c.RevokeSVID(cmd.Context(), &adminv1.RevokeSVIDRequest{Serial: serial, SpiffeId: id}); err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if serial == "" {
					fmt.Fprintf(w, "revoked every svid of %s issued until now\n", id)
					fmt.Fprintln(w, "its entries still mint new svids: delete them (sigil entry delete) unless the workload is trusted again")
				} else {
					fmt.Fprintf(w, "revoked svid %s\n", serial)
				}
				_, err := fmt.Fprintln(w, "the ca re-keys so that verifiers without crls refuse it too: see sigil ca status")
				return err
			})
		},
	}
	cmd.Flags().StringVar(&serial, "serial", "", "serial number of the SVID, hex")
	cmd.Flags().StringVar(&id, "spiffe-id", "", "with --serial: recorded with the revocation; alone: revoke every SVID of this ID issued until now")
	addAdminSocketFlag(cmd)
	return cmd
}

// svidView is one X509-SVID as -o json|yaml prints it.
type svidView struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Hint      string    `json:"hint,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	ExpiresAt time.Time `json:"expires_at"`
	// WrittenTo is the --write directory, on the SVID written there.
	WrittenTo string `json:"written_to,omitempty"`
}

func svidViews(svids []*x509svid.SVID, writtenTo string) []svidView {
	out := make([]svidView, 0, len(svids))
	for i, s := range svids {
		leaf := s.Certificates[0]
		v := svidView{SPIFFEID: s.ID.String(), Hint: s.Hint, Serial: fmt.Sprintf("%x", leaf.SerialNumber),
			NotBefore: leaf.NotBefore.UTC(), ExpiresAt: leaf.NotAfter.UTC()}
		if i == 0 { // DefaultSVID is the first
			v.WrittenTo = writtenTo
		}
		out = append(out, v)
	}
	return out
}

func newSVIDFetchCmd() *cobra.Command {
	var wf workloadFlags
	var write, output string
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Print the X509-SVIDs the agent gives this process, or write the first one to files",
		Long: `Fetch X509-SVIDs over the SPIFFE Workload API. With --write DIR, the default
SVID is written as DIR/svid.pem (certificate chain), DIR/svid.key (PKCS #8
private key, mode 0600) and DIR/bundle.pem (the trust domain's roots).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, ctx, done, err := wf.client(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			xc, err := c.FetchX509Context(ctx)
			if err != nil {
				return c.explain("fetch x509-svid", err)
			}
			if len(xc.SVIDs) == 0 {
				return errors.New("the agent gave no X509-SVID")
			}
			out := cmd.OutOrStdout()
			if output == outTable {
				tw := newTable(out)
				fmt.Fprintln(tw, "SPIFFE ID\tEXPIRES\tHINT")
				for _, s := range xc.SVIDs {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", s.ID, s.Certificates[0].NotAfter.UTC().Format(time.RFC3339), orDash(s.Hint))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if write == "" {
				if output != outTable {
					return printData(out, output, svidViews(xc.SVIDs, ""))
				}
				return nil
			}
			svid := xc.DefaultSVID()
			certs, key, err := svid.Marshal()
			if err != nil {
				return fmt.Errorf("encode svid: %w", err)
			}
			b, err := xc.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
			if err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			var roots []byte
			for _, r := range b.X509Authorities() {
				roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
			}
			if err := os.MkdirAll(write, 0o700); err != nil {
				return fmt.Errorf("--write dir: %w", err)
			}
			for _, f := range []struct {
				name string
				data []byte
				mode os.FileMode
			}{{"svid.key", key, 0o600}, {"svid.pem", certs, 0o644}, {"bundle.pem", roots, 0o644}} {
				if err := atomicfile.Write(filepath.Join(write, f.name), f.data, f.mode); err != nil {
					return err
				}
			}
			if output != outTable {
				return printData(out, output, svidViews(xc.SVIDs, write))
			}
			fmt.Fprintf(out, "wrote %s: svid.pem, svid.key, bundle.pem\n", write)
			return nil
		},
	}
	wf.add(cmd)
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVar(&write, "write", "", "write svid.pem, svid.key and bundle.pem into this directory")
	return cmd
}
