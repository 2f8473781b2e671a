package authz_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/internal/idleconn/idleconntest"
)

const meshPolicy = `package envoy.authz

default allow := false

allow if {
	input.sigil.source.trust_domain == "example.org"
	input.sigil.source.segments[3] == "frontend"
	input.attributes.request.http.method == "GET"
}
`

const shadowPolicy = `package envoy.authz

default allow := false

allow if input.sigil.source.trust_domain == "example.org"
`

func loadRequest(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "requests", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &req
}

func newEngine(t testing.TB, src string) *engine.Engine {
	t.Helper()
	e, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(context.Background(), engine.Policy{Revision: "test", Modules: map[string]string{"p.rego": src}}); err != nil {
		t.Fatal(err)
	}
	return e
}

type harness struct {
	client  authv3.AuthorizationClient
	conn    *grpc.ClientConn
	addr    net.Addr
	logPath string
	reg     *prometheus.Registry
	reloads *prometheus.Registry
	stop    func()
}

// reg2 is a second registry for metrics a test wires itself.
func (h *harness) reg2() *prometheus.Registry {
	if h.reloads == nil {
		h.reloads = prometheus.NewRegistry()
	}
	return h.reloads
}

// start runs a real server on a loopback port with a real decision log.
func start(t *testing.T, cfg authz.Config) *harness {
	t.Helper()
	h := &harness{logPath: filepath.Join(t.TempDir(), "decisions.log"), reg: prometheus.NewRegistry()}
	m, err := authz.NewMetrics(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := decisionlog.New(decisionlog.Config{Sinks: []decisionlog.Sink{decisionlog.NewFileSink(h.logPath, 0, 0)}, LogRequest: true, OnDrop: m.LogDropped})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log, cfg.Metrics = dl, m
	srv, err := authz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Serve(ctx, lis); done <- struct{}{} }()
	go func() { _ = dl.Run(ctx); done <- struct{}{} }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h.conn, h.client, h.addr = conn, authv3.NewAuthorizationClient(conn), lis.Addr()
	h.stop = func() {
		conn.Close()
		cancel()
		<-done
		<-done
	}
	t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
		}
	})
	return h
}

// stopAndRead stops the server and decision log and returns the log lines.
func (h *harness) stopAndRead(t *testing.T) []decisionlog.Entry {
	t.Helper()
	h.stop()
	h.stop = nil
	f, err := os.Open(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := decisionlog.NewVerifier(decisionlog.VerifyOptions{AllowUnsigned: true})
	if err := v.Check(h.logPath, f); err != nil {
		t.Fatalf("decision log does not verify: %v", err)
	}
	if _, err := v.Finish(); err != nil {
		t.Fatalf("decision log does not verify: %v", err)
	}
	raw, _ := os.ReadFile(h.logPath)
	var out []decisionlog.Entry
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		e, err := decisionlog.Decode([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestCheck(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, meshPolicy)})
	tests := []struct {
		request    string
		code       code.Code
		httpStatus int32
		reason     string
	}{
		{"01-mtls-allowed-get", code.Code_OK, 0, "allowed"},
		{"02-mtls-wrong-source", code.Code_PERMISSION_DENIED, 0, "denied"},
		{"03-mtls-post-admin", code.Code_PERMISSION_DENIED, 0, "denied"},
		{"04-no-principals", code.Code_PERMISSION_DENIED, 0, "denied"},
		{"05-foreign-trust-domain", code.Code_PERMISSION_DENIED, 0, "denied"},
		{"22-bad-path", code.Code_PERMISSION_DENIED, 400, "bad_request"},
		{"21-bad-json-body", code.Code_PERMISSION_DENIED, 400, "bad_request"},
	}
	for _, tt := range tests {
		t.Run(tt.request, func(t *testing.T) {
			resp, err := h.client.Check(context.Background(), loadRequest(t, tt.request))
			if err != nil {
				t.Fatal(err)
			}
			if got := code.Code(resp.GetStatus().GetCode()); got != tt.code {
				t.Errorf("status = %v, want %v", got, tt.code)
			}
			if got := int32(resp.GetDeniedResponse().GetStatus().GetCode()); got != tt.httpStatus {
				t.Errorf("denied http status = %d, want %d", got, tt.httpStatus)
			}
			if resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() == "" {
				t.Error("no decision_id in dynamic metadata")
			}
		})
	}
	hc, err := healthpb.NewHealthClient(h.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}
	// Envoy's connection is idle between requests: the server's side must
	// not run the kernel keepalive, which with gRPC's TCP user timeout
	// resets idle connections (internal/idleconn).
	idleconntest.NoKernelKeepalive(t, h.addr)
	if got := counter(t, h.reg, "sigil_authz_decisions_total", "bad_request", "deny"); got != 2 {
		t.Errorf("bad_request decisions counted = %v, want 2", got)
	}

	entries := h.stopAndRead(t)
	if len(entries) != len(tests) {
		t.Fatalf("decision log has %d lines, want %d", len(entries), len(tests))
	}
	byPath := map[string]decisionlog.Entry{}
	for _, e := range entries {
		byPath[e.Path] = e
	}
	first := byPath["/items"]
	if first.Source == "" || first.Destination != "spiffe://example.org/ns/shop/sa/cart" || first.Method != "GET" || first.Revision != "test" {
		t.Errorf("decision entry lacks fields: %+v", first)
	}
	for _, e := range entries {
		if e.Reason != "bad_request" && e.Reason != "allowed" && e.Reason != "denied" {
			t.Errorf("unexpected reason %q", e.Reason)
		}
	}
}

// counter reads a counter by name and label values in label-name order.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for i, lp := range m.GetLabel() {
				if lp.GetValue() != labels[i] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestSecretHeadersMasked(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, meshPolicy)})
	if _, err := h.client.Check(context.Background(), loadRequest(t, "06-bearer-header")); err != nil {
		t.Fatal(err)
	}
	entries := h.stopAndRead(t)
	req, err := entries[0].DecodeRequest()
	if err != nil || req == nil {
		t.Fatalf("logged request: %v", err)
	}
	headers := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
	if headers["authorization"] != "***" || headers["x-request-id"] != "abc" {
		t.Fatalf("logged headers = %v, want authorization masked and the rest kept", headers)
	}
	raw, _ := os.ReadFile(h.logPath)
	if strings.Contains(string(raw), "s3cr3t") || strings.Contains(string(entries[0].Request), "s3cr3t") {
		t.Fatal("bearer token reached the decision log")
	}
}

func TestDryRunAllowsAndRecords(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, meshPolicy), DryRun: true})
	resp, err := h.client.Check(context.Background(), loadRequest(t, "02-mtls-wrong-source"))
	if err != nil {
		t.Fatal(err)
	}
	if code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
		t.Fatalf("dry run enforced a denial: %v", resp.GetStatus())
	}
	entries := h.stopAndRead(t)
	if len(entries) != 1 || entries[0].Result != "deny" || !entries[0].DryRun {
		t.Fatalf("dry-run decision not recorded as the would-be denial: %+v", entries)
	}
}

func TestShadowDisagreement(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, meshPolicy), Shadow: newEngine(t, shadowPolicy)})
	for _, name := range []string{"01-mtls-allowed-get", "03-mtls-post-admin", "05-foreign-trust-domain"} {
		resp, err := h.client.Check(context.Background(), loadRequest(t, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "03-mtls-post-admin" && code.Code(resp.GetStatus().GetCode()) != code.Code_PERMISSION_DENIED {
			t.Fatal("shadow policy was enforced")
		}
	}
	if got := counter(t, h.reg, "sigil_authz_shadow_disagreements_total", "deny", "allow"); got != 1 {
		t.Errorf("shadow disagreements = %v, want 1", got)
	}
	var disagree int
	for _, e := range h.stopAndRead(t) {
		if e.Shadow == nil {
			t.Fatal("entry without shadow result")
		}
		if e.Shadow.Disagree {
			disagree++
			if e.Path != "/admin/reset" {
				t.Errorf("disagreement on %s", e.Path)
			}
		}
	}
	if disagree != 1 {
		t.Errorf("logged disagreements = %d, want 1", disagree)
	}
}

func TestNoPolicyFailsClosed(t *testing.T) {
	e, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, authz.Config{Engine: e})
	resp, err := h.client.Check(context.Background(), loadRequest(t, "01-mtls-allowed-get"))
	if err != nil {
		t.Fatal(err)
	}
	if code.Code(resp.GetStatus().GetCode()) != code.Code_PERMISSION_DENIED {
		t.Fatal("request allowed with no policy loaded")
	}
	if entries := h.stopAndRead(t); entries[0].Reason != "no_policy" {
		t.Fatalf("reason = %q", entries[0].Reason)
	}
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "authz.sock")
	lis, err := authz.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := authz.New(authz.Config{Engine: newEngine(t, meshPolicy)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, loadRequest(t, "01-mtls-allowed-get"))
	if err != nil || code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
		t.Fatalf("check over unix socket: %v %v", resp, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A decision the log cannot write follows the log's failure policy: deny
// (the default) turns an allow into a denial, allow keeps it.
func TestUnrecordedDecisionFollowsPolicy(t *testing.T) {
	for _, tt := range []struct {
		policy decisionlog.FailurePolicy
		code   code.Code
	}{
		{decisionlog.FailDeny, code.Code_PERMISSION_DENIED},
		{decisionlog.FailAllow, code.Code_OK},
	} {
		t.Run(string(tt.policy), func(t *testing.T) {
			// A log in a directory that does not exist: every write fails.
			path := filepath.Join(t.TempDir(), "gone", "decisions.log")
			dl, err := decisionlog.New(decisionlog.Config{Sinks: []decisionlog.Sink{decisionlog.NewFileSink(path, 0, 0)}, OnFailure: tt.policy})
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			m, err := authz.NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := authz.New(authz.Config{Engine: newEngine(t, meshPolicy), Log: dl, Metrics: m})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- dl.Run(ctx) }()
			defer func() { cancel(); <-done }()
			resp, err := srv.Check(context.Background(), loadRequest(t, "01-mtls-allowed-get"))
			if err != nil {
				t.Fatal(err)
			}
			if got := code.Code(resp.GetStatus().GetCode()); got != tt.code {
				t.Fatalf("status = %v, want %v", got, tt.code)
			}
			if tt.policy == decisionlog.FailDeny {
				if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 503 {
					t.Errorf("http status = %d, want 503", got)
				}
				if got := counter(t, reg, "sigil_authz_decisions_total", string(authz.ReasonNotRecorded), "deny"); got != 1 {
					t.Errorf("decision_log_failed denials counted = %v, want 1", got)
				}
			}
		})
	}
}
