package service

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// svidSigner is the checkpoint signer: authz's X509-SVID from the agent's
// Workload API, followed through rotation by go-spiffe. Until the first
// SVID arrives a checkpoint fails (logged and counted by the decision log)
// and the next one covers the lines since.
type svidSigner struct {
	socket, signerID string
	logger           *slog.Logger
	src              atomic.Pointer[workloadapi.X509Source]
}

// GetX509SVID implements decisionlog.Identity.
func (s *svidSigner) GetX509SVID() (*x509svid.SVID, error) {
	src := s.src.Load()
	if src == nil {
		return nil, fmt.Errorf("no X509-SVID from %s yet", s.socket)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, err
	}
	if s.signerID != "" && svid.ID.String() != s.signerID {
		return nil, fmt.Errorf("the Workload API at %s gives no SVID for signer_id %s (yet)", s.socket, s.signerID)
	}
	return svid, nil
}

// run connects to the Workload API (go-spiffe retries until the agent
// answers with an SVID) and serves SVIDs until logDone is closed, so the
// decision log's last checkpoint on shutdown is still signed.
func (s *svidSigner) run(ctx context.Context, logDone <-chan struct{}) error {
	opts := []workloadapi.X509SourceOption{workloadapi.WithClientOptions(workloadapi.WithAddr(s.socket))}
	if s.signerID != "" {
		opts = append(opts, workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, v := range svids {
				if v.ID.String() == s.signerID {
					return v
				}
			}
			return svids[0]
		}))
	}
	src, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("checkpoint signer from %s: %w", s.socket, err)
	}
	defer src.Close()
	s.src.Store(src)
	s.logger.Info("decision log checkpoints are signed with the X509-SVID from the Workload API", "socket", s.socket, "signer_id", s.signerID)
	<-logDone
	s.src.Store(nil)
	return nil
}
