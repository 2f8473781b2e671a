package authz

import (
	"context"
	"crypto/rand"
	"crypto/x509"
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
	"github.com/sigilhq/sigil/authz/revocation"
	"github.com/sigilhq/sigil/internal/idleconn"
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

// Reasons of the limits' denials (server side, not the policy's).
const (
	// ReasonOverloaded: every evaluation slot was busy and the queue full,
	// or no slot freed within the evaluation time limit.
	ReasonOverloaded engine.Reason = "overloaded"
	// ReasonInputTooLarge: the request body is over Limits.MaxBodyBytes.
	ReasonInputTooLarge engine.Reason = "input_too_large"
)

// Defaults of Limits.
const (
	// DefaultEvalTimeout is Envoy's default ext_authz timeout (200ms): past
	// it Envoy has stopped waiting, so evaluating on only spends CPU and
	// memory on an answer nobody reads. Normal policies decide in well
	// under a millisecond.
	DefaultEvalTimeout = 200 * time.Millisecond
	// DefaultMaxConcurrentEvals bounds the memory held by evaluations in
	// progress; it is above the load a 2-core host serves at its peak
	// (about 32 in flight), so only slow evaluations ever queue.
	DefaultMaxConcurrentEvals = 64
	// DefaultMaxQueued is how many Checks may wait for a slot.
	DefaultMaxQueued = 1024
	// DefaultMaxBodyBytes bounds the request body taken into input
	// (body plus raw_body).
	DefaultMaxBodyBytes = 1 << 20
)

// Limits bound what one Check may cost. Zero fields take the defaults.
type Limits struct {
	// EvalTimeout bounds each evaluation (enforced and shadow), waiting
	// for a slot included; the caller's deadline, if shorter, wins. OPA
	// stops the evaluation at the deadline and the Check is denied with
	// reason eval_timeout.
	EvalTimeout time.Duration
	// MaxConcurrentEvals is how many Checks evaluate at once; more wait.
	MaxConcurrentEvals int
	// MaxQueued is how many Checks may wait for an evaluation slot; more
	// are denied at once with reason overloaded.
	MaxQueued int
	// MaxBodyBytes bounds the request body (body plus raw_body); a larger
	// one is denied with reason input_too_large (HTTP 413) before any
	// evaluation.
	MaxBodyBytes int
}

func (l *Limits) fill() error {
	if l.EvalTimeout < 0 || l.MaxConcurrentEvals < 0 || l.MaxQueued < 0 || l.MaxBodyBytes < 0 {
		return errors.New("authz limits must not be negative")
	}
	if l.EvalTimeout == 0 {
		l.EvalTimeout = DefaultEvalTimeout
	}
	if l.MaxConcurrentEvals == 0 {
		l.MaxConcurrentEvals = DefaultMaxConcurrentEvals
	}
	if l.MaxQueued == 0 {
		l.MaxQueued = DefaultMaxQueued
	}
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return nil
}

// Reasons of revocation denials (Config.Revocation).
const (
	// ReasonRevoked: the peer certificate is listed in its issuer's CRL.
	ReasonRevoked engine.Reason = "svid_revoked"
	// ReasonRevocationUnknown: the peer certificate's revocation status
	// cannot be told (no CRL for its issuer, a CRL past nextUpdate, no
	// CRLs yet, or a certificate that does not parse). Fail closed.
	ReasonRevocationUnknown engine.Reason = "revocation_unknown"
)

// Revocation checks a peer certificate: nil when it is not revoked, an
// error wrapping revocation.ErrRevoked when it is, any other error when
// its status cannot be told.
type Revocation interface {
	Check(cert *x509.Certificate) error
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
	// (default Limits.MaxConcurrentEvals, at least 4 per GOMAXPROCS).
	// Rego evaluation is deeply recursive: a fresh goroutine per call
	// would grow its stack from the minimum on every call, which cost
	// about a quarter of the server's CPU under load; a worker keeps its
	// grown stack. gRPC starts a fresh goroutine for a call that finds
	// every worker busy, so there are as many workers as evaluations may
	// run at once: with 16, 64 calls in flight cost 45.8 µs of CPU per
	// decision on one core instead of 37.7.
	StreamWorkers int
	// Limits bound evaluation time, concurrency and input size.
	Limits Limits
	// Revocation, if set, checks the peer certificate Envoy sends in
	// attributes.source.certificate (include_peer_certificate): a revoked
	// or unknown one is denied before any evaluation. A Check without a
	// certificate is not checked.
	Revocation Revocation
}

// Server is the ext_authz v3 Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	cfg   Config
	input *input.Builder
	// slots holds a token per evaluation in progress; queued counts the
	// Checks waiting for one.
	slots  chan struct{}
	queued atomic.Int64
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
	if err := cfg.Limits.fill(); err != nil {
		return nil, err
	}
	if cfg.StreamWorkers == 0 {
		cfg.StreamWorkers = max(cfg.Limits.MaxConcurrentEvals, 4*runtime.GOMAXPROCS(0))
	}
	return &Server{cfg: cfg, input: input.NewBuilder(cfg.Input), slots: make(chan struct{}, cfg.Limits.MaxConcurrentEvals)}, nil
}

// Check implements authv3.AuthorizationServer. It never returns an error:
// every failure is a denial with a reason.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := s.cfg.Now()
	id := s.cfg.NewID()
	var d engine.Decision
	var in ast.Value
	release := func() {}
	if rd, revoked := s.revoked(req); revoked {
		d = rd
	} else if body := len(req.GetAttributes().GetRequest().GetHttp().GetBody()) + len(req.GetAttributes().GetRequest().GetHttp().GetRawBody()); body > s.cfg.Limits.MaxBodyBytes {
		d = s.limited(ReasonInputTooLarge, "max_body_bytes", fmt.Sprintf("request body of %d bytes is over limits.max_body_bytes (%d)", body, s.cfg.Limits.MaxBodyBytes), 413, "request body too large")
	} else if d, release = s.admit(ctx); release != nil {
		var err error
		if in, err = s.input.Build(req); err != nil {
			d = engine.Deny(engine.ReasonBadRequest, err.Error(), "")
			d.HTTPStatus, d.Body = 400, "bad request"
		} else {
			d = s.decide(ctx, s.cfg.Engine, in)
		}
	} else {
		release = func() {}
	}
	var shadow *decisionlog.Shadow
	if s.cfg.Shadow != nil && in != nil {
		sd := s.decide(ctx, s.cfg.Shadow, in)
		shadow = &decisionlog.Shadow{Revision: sd.Revision, Result: result(sd.Allowed), Reason: string(sd.Reason), Disagree: sd.Allowed != d.Allowed}
		if shadow.Disagree {
			s.cfg.Metrics.shadowDisagreement(d.Allowed, sd.Allowed)
			s.cfg.Logger.Info("shadow policy disagrees", "decision_id", id, "enforced", result(d.Allowed), "shadow", shadow.Result, "shadow_reason", shadow.Reason)
		}
	}
	release()
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

// revoked checks the peer certificate against Config.Revocation and
// returns the denial if it fails.
func (s *Server) revoked(req *authv3.CheckRequest) (engine.Decision, bool) {
	pem := req.GetAttributes().GetSource().GetCertificate()
	if s.cfg.Revocation == nil || pem == "" {
		return engine.Decision{}, false
	}
	cert, err := revocation.ParseURLEncodedPEM(pem)
	if err == nil {
		err = s.cfg.Revocation.Check(cert)
	}
	switch {
	case err == nil:
		return engine.Decision{}, false
	case errors.Is(err, revocation.ErrRevoked):
		d := engine.Deny(ReasonRevoked, err.Error(), "")
		d.HTTPStatus, d.Body = 403, "peer certificate revoked"
		return d, true
	default:
		d := engine.Deny(ReasonRevocationUnknown, err.Error(), "")
		d.HTTPStatus, d.Body = 403, "peer certificate revocation status unknown"
		return d, true
	}
}

// admit takes an evaluation slot, waiting for one at most EvalTimeout
// (or until ctx ends) and only if fewer than MaxQueued Checks wait. It
// returns the release func, or nil and the denial.
func (s *Server) admit(ctx context.Context) (engine.Decision, func()) {
	release := func() { <-s.slots; s.cfg.Metrics.evalDone() }
	select {
	case s.slots <- struct{}{}:
		s.cfg.Metrics.evalStarted()
		return engine.Decision{}, release
	default:
	}
	if n := s.queued.Add(1); n > int64(s.cfg.Limits.MaxQueued) {
		s.queued.Add(-1)
		return s.limited(ReasonOverloaded, "max_queued", fmt.Sprintf("%d evaluations in progress (limits.max_concurrent_evals) and %d waiting (limits.max_queued)",
			s.cfg.Limits.MaxConcurrentEvals, s.cfg.Limits.MaxQueued), 503, "authorization overloaded"), nil
	}
	s.cfg.Metrics.queueChanged(1)
	defer func() { s.queued.Add(-1); s.cfg.Metrics.queueChanged(-1) }()
	wctx, cancel := context.WithTimeout(ctx, s.cfg.Limits.EvalTimeout)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
		s.cfg.Metrics.evalStarted()
		return engine.Decision{}, release
	case <-wctx.Done():
		return s.limited(ReasonOverloaded, "eval_timeout", fmt.Sprintf("no evaluation slot freed within %s (limits.max_concurrent_evals %d, limits.eval_timeout)",
			s.cfg.Limits.EvalTimeout, s.cfg.Limits.MaxConcurrentEvals), 503, "authorization overloaded"), nil
	}
}

// decide evaluates in under the evaluation time limit. Envoy sends its
// ext_authz timeout (200ms by default) as the call's deadline; when that
// deadline already comes within EvalTimeout, it is the limit and no
// context and timer of our own are made (a tenth of a decision's
// allocations, so fewer GC cycles under load). The deadline is on the
// real clock, as context timers are.
func (s *Server) decide(ctx context.Context, dec Decider, in ast.Value) engine.Decision {
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > s.cfg.Limits.EvalTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Limits.EvalTimeout)
		defer cancel()
	}
	d := dec.Decide(ctx, in)
	if d.Reason == engine.ReasonTimeout {
		rev := d.Revision
		d = s.limited(engine.ReasonTimeout, "eval_timeout", fmt.Sprintf("evaluation timed out after at most %s (limits.eval_timeout, or the caller's deadline if shorter)", s.cfg.Limits.EvalTimeout),
			503, "evaluation timed out")
		d.Revision = rev
	}
	return d
}

// limited is a denial by a limit, counted under the limit's config key.
func (s *Server) limited(reason engine.Reason, limit, detail string, status int, body string) engine.Decision {
	s.cfg.Metrics.limitDenied(limit)
	d := engine.Deny(reason, detail, "")
	d.HTTPStatus, d.Body = status, body
	return d
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
	// Envoy holds its connection open between requests: an HTTP/2 ping,
	// not the kernel's keepalive, tells a silent peer (internal/idleconn).
	gs := grpc.NewServer(append(idleconn.ServerOptions(), grpc.NumStreamWorkers(uint32(s.cfg.StreamWorkers)))...)
	authv3.RegisterAuthorizationServer(gs, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(idleconn.Listener(lis)) }()
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
