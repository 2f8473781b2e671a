package revocation

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// DefaultResource is the agent's SDS validation context of our own trust
// domain, the one Envoy's mTLS checks CRLs from.
const DefaultResource = "ROOTCA"

// Watcher follows one SDS validation context on the agent's socket (as
// Envoy does) and keeps the Set built from its trusted CAs and CRLs. The
// agent pushes every change, so a revocation reaches authz as soon as it
// reaches Envoy.
type Watcher struct {
	// Socket is the agent's unix socket path (required).
	Socket string
	// Resource is the validation context's name (default DefaultResource).
	Resource string
	// NodeID names authz to the agent (logged only); default "sigil-authz".
	NodeID string
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
	// MaxBackoff bounds the wait between reconnects (default 5 s).
	MaxBackoff time.Duration

	set atomic.Pointer[Set]
}

// Check implements authz.Revocation with the latest Set.
func (w *Watcher) Check(cert *x509.Certificate) error {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	return w.set.Load().Check(cert, now())
}

// Ready reports whether a Set has been received.
func (w *Watcher) Ready(context.Context) error {
	if w.set.Load() == nil {
		return fmt.Errorf("no CRLs from the agent's SDS (%s) yet", w.Socket)
	}
	return nil
}

// Run follows the validation context until ctx ends, reconnecting with
// backoff. The last good Set stays in force while disconnected; its CRLs'
// nextUpdate bounds how long.
func (w *Watcher) Run(ctx context.Context) error {
	if w.Socket == "" {
		return errors.New("revocation watcher needs the agent's socket")
	}
	logger := w.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	maxBackoff := w.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 5 * time.Second
	}
	conn, err := grpc.NewClient("unix://"+w.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("revocation sds %s: %w", w.Socket, err)
	}
	defer conn.Close()
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	backoff := 100 * time.Millisecond
	for {
		got, err := w.stream(ctx, client, logger)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = 100 * time.Millisecond
		}
		logger.Warn("revocation sds stream ended; reconnecting", "socket", w.Socket, "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// stream runs one SotW stream; got reports whether any Set was taken.
func (w *Watcher) stream(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, logger *slog.Logger) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := client.StreamSecrets(ctx)
	if err != nil {
		return false, err
	}
	name := w.Resource
	if name == "" {
		name = DefaultResource
	}
	nodeID := w.NodeID
	if nodeID == "" {
		nodeID = "sigil-authz"
	}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID, UserAgentName: "sigil-authz"}, TypeUrl: secretTypeURL, ResourceNames: []string{name}}
	var version string
	for {
		if err := st.Send(req); err != nil {
			return got, err
		}
		resp, err := st.Recv()
		if err != nil {
			return got, err
		}
		req = &discoveryv3.DiscoveryRequest{TypeUrl: secretTypeURL, ResourceNames: []string{name}, ResponseNonce: resp.GetNonce(), VersionInfo: version}
		set, err := parseResponse(resp, name)
		if err != nil {
			logger.Warn("revocation sds: refusing the validation context", "resource", name, "error", err)
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			continue
		}
		version = resp.GetVersionInfo()
		req.VersionInfo = version
		if set == nil {
			continue // not served (yet): keep the last Set
		}
		w.set.Store(set)
		got = true
		logger.Debug("revocation set updated", "resource", name, "version", version)
	}
}

// parseResponse returns the Set of the named validation context in resp,
// nil if resp does not carry it.
func parseResponse(resp *discoveryv3.DiscoveryResponse, name string) (*Set, error) {
	for _, a := range resp.GetResources() {
		var sec tlsv3.Secret
		if err := a.UnmarshalTo(&sec); err != nil {
			return nil, fmt.Errorf("secret: %w", err)
		}
		if sec.GetName() != name {
			continue
		}
		vc := sec.GetValidationContext()
		if vc == nil {
			return nil, fmt.Errorf("secret %q is not a validation context", name)
		}
		certs, err := pemBlocks(vc.GetTrustedCa().GetInlineBytes(), "CERTIFICATE", MaxAuthorities)
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		auths := make([]*x509.Certificate, len(certs))
		for i, der := range certs {
			if auths[i], err = x509.ParseCertificate(der); err != nil {
				return nil, fmt.Errorf("trusted_ca %d: %w", i, err)
			}
		}
		crls, err := pemBlocks(vc.GetCrl().GetInlineBytes(), "X509 CRL", MaxCRLs)
		if err != nil {
			return nil, fmt.Errorf("crl: %w", err)
		}
		return NewSet(auths, crls)
	}
	return nil, nil
}

func pemBlocks(b []byte, typ string, limit int) ([][]byte, error) {
	var out [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != typ {
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		if len(out) == limit {
			return nil, fmt.Errorf("over %d PEM blocks", limit)
		}
		out = append(out, blk.Bytes)
	}
}
