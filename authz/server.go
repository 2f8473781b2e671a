package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
)

// Decider evaluates an input against the current policy revision.
type Decider interface {
	Decide(ctx context.Context, in ast.Value) engine.Decision
}

// Recorder receives decisions for the decision log. It takes ownership of
// req (Check does not touch req afterwards). An error means the decision
// could not be recorded and the log's failure policy wants it denied
// (decisionlog.ErrNotRecorded): Check then denies.
type Recorder interface {
	Log(ctx context.Context, e decisionlog.Entry, req *authv3.CheckRequest) error
}

// ReasonNotRecorded denies a request whose decision the log could not
// write under a fail-closed (deny) log policy.
const ReasonNotRecorded engine.Reason = "decision_log_failed"

// Config wires a Server.
type Config struct {
	// Engine decides requests (required).
	Engine Decider
	// Shadow, if set, is evaluated beside Engine; disagreements are logged
	// and counted but never enforced.
	Shadow Decider
	// DryRun allows every request and records what would have happened.
	DryRun bool
	// Log records decisions; nil records nothing.
	Log Recorder
	// Metrics, if set, counts decisions.
	Metrics *Metrics
	Input   input.Options
	Logger  *slog.Logger
	// Now defaults to time.Now; NewID to a random per-server prefix and a
	// counter (unique, cheap; decision IDs need not be unpredictable).
	Now   func() time.Time
	NewID func() string
	// StreamWorkers is how many long-lived goroutines serve Check calls
	// (default 4 per GOMAXPROCS, at least 16). Rego evaluation is deeply
	// recursive: a fresh goroutine per call would grow its stack from the
	// minimum on every call, which cost about a quarter of the server's
	// CPU under load; a worker keeps its grown stack.
	StreamWorkers int
}

// Server is the ext_authz v3 Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	cfg   Config
	input *input.Builder
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("authz server needs an engine")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		var prefix [8]byte
		if _, err := rand.Read(prefix[:]); err != nil {
			return nil, fmt.Errorf("decision id prefix: %w", err)
		}
		p := hex.EncodeToString(prefix[:]) + "-"
		var n atomic.Uint64
		cfg.NewID = func() string { return p + strconv.FormatUint(n.Add(1), 10) }
	}
	if cfg.StreamWorkers < 0 {
		return nil, fmt.Errorf("authz server stream workers %d: must not be negative", cfg.StreamWorkers)
	}
	if cfg.StreamWorkers == 0 {
		cfg.StreamWorkers = max(16, 4*runtime.GOMAXPROCS(0))
	}
	return &Server{cfg: cfg, input: input.NewBuilder(cfg.Input)}, nil
}

// Check implements authv3.AuthorizationServer. It never returns an error:
// every failure is a denial with a reason.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := s.cfg.Now()
	id := s.cfg.NewID()
	var d engine.Decision
	in, err := s.input.Build(req)
	if err != nil {
		d = engine.Deny(engine.ReasonBadRequest, err.Error(), "")
		d.HTTPStatus, d.Body = 400, "bad request"
	} else {
		d = s.cfg.Engine.Decide(ctx, in)
	}
	var shadow *decisionlog.Shadow
	if s.cfg.Shadow != nil && in != nil {
		sd := s.cfg.Shadow.Decide(ctx, in)
		shadow = &decisionlog.Shadow{Revision: sd.Revision, Result: result(sd.Allowed), Reason: string(sd.Reason), Disagree: sd.Allowed != d.Allowed}
		if shadow.Disagree {
			s.cfg.Metrics.shadowDisagreement(d.Allowed, sd.Allowed)
			s.cfg.Logger.Info("shadow policy disagrees", "decision_id", id, "enforced", result(d.Allowed), "shadow", shadow.Result, "shadow_reason", shadow.Reason)
		}
	}
	resp := Response(d, id)
	if s.cfg.DryRun && !d.Allowed {
		resp = &authv3.CheckResponse{
			Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
			DynamicMetadata: resp.DynamicMetadata,
		}
	}
	elapsed := s.cfg.Now().Sub(start)
	if d.Reason != engine.ReasonAllowed && d.Reason != engine.ReasonDenied {
		s.cfg.Logger.Warn("request denied by fail-closed rule", "decision_id", id, "reason", string(d.Reason), "detail", d.Detail)
	}
	if s.cfg.Log != nil {
		attrs := req.GetAttributes()
		h := attrs.GetRequest().GetHttp()
		err := s.cfg.Log.Log(ctx, decisionlog.Entry{
			DecisionID:  id,
			Time:        start.UTC(),
			Source:      input.SPIFFEID(attrs.GetSource().GetPrincipal()),
			Destination: input.SPIFFEID(attrs.GetDestination().GetPrincipal()),
			Method:      h.GetMethod(),
			Path:        h.GetPath(),
			Result:      result(d.Allowed),
			Reason:      string(d.Reason),
			Detail:      d.Detail,
			Revision:    d.Revision,
			LatencyNS:   elapsed.Nanoseconds(),
			DryRun:      s.cfg.DryRun,
			Shadow:      shadow,
		}, req)
		if err != nil {
			// Fail closed, dry run included: an unrecorded decision must
			// not let a request through.
			s.cfg.Logger.Warn("request denied: decision not recorded", "decision_id", id, "decided", result(d.Allowed), "error", err)
			d = engine.Deny(ReasonNotRecorded, "", d.Revision)
			d.HTTPStatus, d.Body = 503, "decision log unavailable"
			resp = Response(d, id)
		}
	}
	s.cfg.Metrics.observe(d, elapsed)
	return resp, nil
}

func result(allowed bool) string {
	if allowed {
		return decisionlog.ResultAllow
	}
	return decisionlog.ResultDeny
}

// Response renders a decision as Envoy expects it, the way
// opa-envoy-plugin does: a boolean decision sets only the status; an object
// decision adds headers, body, HTTP status and dynamic metadata.
func Response(d engine.Decision, decisionID string) *authv3.CheckResponse {
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}}
	if d.Allowed {
		resp.Status.Code = int32(code.Code_OK)
	}
	switch {
	case d.Object && d.Allowed:
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:                 headerOptions(d.Headers),
			HeadersToRemove:         d.RequestHeadersToRemove,
			ResponseHeadersToAdd:    headerOptions(d.ResponseHeadersToAdd),
			QueryParametersToRemove: d.QueryParametersToRemove,
			QueryParametersToSet:    queryParams(d.QueryParametersToSet),
		}}
	case d.Object || d.HTTPStatus != 0:
		status := d.HTTPStatus
		if status == 0 {
			status = 403
		}
		resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headerOptions(d.Headers),
			Body:    d.Body,
		}}
	}
	md := d.DynamicMetadata
	if md == nil {
		md = &structpb.Struct{Fields: make(map[string]*structpb.Value, 1)}
	}
	md.Fields["decision_id"] = structpb.NewStringValue(decisionID)
	resp.DynamicMetadata = md
	return resp
}

func headerOptions(hs []engine.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Key, Value: h.Value}}
	}
	return out
}

func queryParams(hs []engine.Header) []*corev3.QueryParameter {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.QueryParameter, len(hs))
	for i, h := range hs {
		out[i] = &corev3.QueryParameter{Key: h.Key, Value: h.Value}
	}
	return out
}

// Serve runs the Authorization and gRPC health services on lis until ctx
// ends, then stops gracefully.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(grpc.NumStreamWorkers(uint32(s.cfg.StreamWorkers)))
	authv3.RegisterAuthorizationServer(gs, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve ext_authz: %w", err)
	case <-ctx.Done():
		hs.Shutdown()
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		return nil
	}
}

// Listen opens addr: "host:port" for TCP or "unix:///path" / "unix:/path"
// for a unix socket.
func Listen(addr string) (net.Listener, error) {
	if p, ok := unixPath(addr); ok {
		// A socket left by a previous run would make Listen fail.
		if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("remove stale socket: %w", err)
			}
		}
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}

func unixPath(addr string) (string, bool) {
	for _, prefix := range []string{"unix://", "unix:"} {
		if len(addr) > len(prefix) && addr[:len(prefix)] == prefix {
			return addr[len(prefix):], true
		}
	}
	return "", false
}
