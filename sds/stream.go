package sds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/clock"
)

// streamCore is the part of a stream's state both protocol variants share.
// It is owned by the stream's handler goroutine.
type streamCore struct {
	s         *Server
	log       *slog.Logger
	mode      string
	started   bool      // the first request has arrived
	snap      *snapshot // nil until the source's first update
	nonces    uint64
	lastNonce string
	badLogged map[string]struct{}
	// serving: the last send found at least one requested name it can
	// serve. A stream that is not serving is closed after the pending
	// timeout.
	serving bool
}

func (c *streamCore) nextNonce() string {
	c.nonces++
	c.lastNonce = strconv.FormatUint(c.nonces, 10)
	return c.lastNonce
}

// first records the caller's node on its first request.
func (c *streamCore) first(node *corev3.Node) {
	c.started = true
	c.log.Info("sds stream started",
		"node_id", truncate(node.GetId()),
		"node_cluster", truncate(node.GetCluster()),
		"user_agent", truncate(node.GetUserAgentName()),
		"user_agent_version", truncate(node.GetUserAgentVersion()))
}

// resolve looks a name up in the current snapshot and logs, once per
// stream, a name that can never be served.
func (c *streamCore) resolve(name string) *resource {
	res, err := c.snap.resolve(name)
	if err != nil {
		if _, seen := c.badLogged[name]; !seen && len(c.badLogged) < 64 {
			if c.badLogged == nil {
				c.badLogged = make(map[string]struct{})
			}
			c.badLogged[name] = struct{}{}
			c.s.m.badNames.Inc()
			c.log.Warn("sds resource name stays pending forever", "error", err)
		}
		return nil
	}
	return res
}

func (c *streamCore) nack(version, nonce string, detail interface{ GetMessage() string }) {
	c.s.m.nacks.WithLabelValues(c.mode).Inc()
	c.log.Warn("sds response rejected by client (NACK)",
		"version", truncate(version), "nonce", truncate(nonce), "error_detail", truncate(detail.GetMessage()))
}

func (c *streamCore) staleNonce(nonce string) {
	c.s.m.stale.WithLabelValues(c.mode).Inc()
	c.log.Debug("sds request with stale nonce ignored", "nonce", truncate(nonce), "last_nonce", c.lastNonce)
}

// versionOf hashes name/version pairs (sorted by name) into one version.
func versionOf(pairs [][2]string) string {
	h := sha256.New()
	for _, p := range pairs {
		h.Write([]byte(strconv.Itoa(len(p[0]))))
		h.Write([]byte{':'})
		h.Write([]byte(p[0]))
		h.Write([]byte(p[1]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// serve runs a stream's loop: requests from recv, updates from the
// subscription, onRequest/onUpdate followed by send after each event.
func serve[Req any](ctx context.Context, s *Server, c *streamCore, recv func() (Req, error),
	onRequest func(Req) error, send func() error) error {
	changed, stopWatch := s.watchCaller(ctx) // before attesting: no change is missed
	defer func() { stopWatch() }()
	sels, err := s.attest(ctx, c.log)
	if err != nil {
		return err
	}
	s.m.streams.WithLabelValues(c.mode).Inc()
	defer s.m.streams.WithLabelValues(c.mode).Dec()
	sub := s.source.Subscribe(sels)
	defer func() { sub.Close() }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqs := make(chan Req)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	updates := sub.Updates()
	var pending clock.Timer // runs while the stream serves nothing
	defer func() {
		if pending != nil {
			pending.Stop()
		}
	}()
	for {
		switch {
		case !c.serving && pending == nil:
			pending = s.clock.NewTimer(s.pending)
		case c.serving && pending != nil:
			pending.Stop()
			pending = nil
		}
		var expired <-chan time.Time
		if pending != nil {
			expired = pending.C()
		}
		select {
		case <-expired:
			s.m.timeouts.Inc()
			c.log.Warn("sds stream closed: it served nothing it asks for within the pending timeout",
				"pending_timeout", s.pending.String())
			return status.Errorf(codes.NotFound,
				"sds: none of the requested secrets could be served for %s (is there an entry for this caller?); "+
					"open a new stream to keep waiting, or raise limits.sds_pending_timeout in the agent config", s.pending)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			if err := onRequest(req); err != nil {
				return err
			}
		case <-changed:
			stopWatch()
			changed, stopWatch = s.watchCaller(ctx)
			next, err := s.attest(ctx, c.log)
			if err != nil {
				c.log.Info("sds stream ended: its caller is no longer attested")
				return err
			}
			if maps.Equal(next, sels) {
				continue
			}
			// The new subscription's first update replaces the snapshot:
			// names the caller no longer holds go from the next response.
			c.log.Info("sds stream follows its caller's new selectors")
			sub.Close()
			sels, sub = next, s.source.Subscribe(next)
			updates = sub.Updates()
			continue
		case u, ok := <-updates:
			if !ok {
				return status.Error(codes.Unavailable, "sds: identity source closed")
			}
			s.m.updatesIn.Inc()
			c.snap = newSnapshot(s.names, u, s.certs)
		}
		if err := send(); err != nil {
			return err
		}
	}
}

// dedupe returns the distinct names, sorted.
func dedupe(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}
