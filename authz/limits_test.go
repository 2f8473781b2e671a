package authz_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/engine"
)

// slowPolicy allows /ok at once; /slow loops 10^8 times over a body that
// never holds (pure CPU, nothing accumulated): minutes without a limit.
const slowPolicy = `package envoy.authz

default allow := false

allow if input.attributes.request.http.path == "/ok"

allow if {
	input.attributes.request.http.path == "/slow"
	some i in numbers.range(1, 10000)
	some j in numbers.range(1, 10000)
	i * j == -1
}
`

func pathRequest(path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Principal: "spiffe://example.org/ns/prod/sa/frontend"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path}},
	}}
}

// rssKB is the process's resident set (VmRSS) or its peak (VmHWM).
func rssKB(t *testing.T, field string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// The issue 10 attack: 40 slow Checks without deadlines against the real
// gRPC server. Each is denied at the evaluation limit with reason
// eval_timeout, a normal Check sent meanwhile is allowed promptly, and
// memory stays bounded.
func TestSlowEvaluationsAreCut(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, slowPolicy)})
	rss0 := rssKB(t, "VmRSS")
	const slow = 40
	start := time.Now()
	var wg sync.WaitGroup
	resps := make([]*authv3.CheckResponse, slow)
	errs := make([]error, slow)
	took := make([]time.Duration, slow)
	for i := range slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resps[i], errs[i] = h.client.Check(context.Background(), pathRequest("/slow")) // no deadline
			took[i] = time.Since(t0)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := h.client.Check(ctx, pathRequest("/ok"))
	normal := time.Since(t0)
	if err != nil {
		t.Fatalf("normal check during the attack: %v", err)
	}
	if ok.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("normal check during the attack: %v, want allowed", ok.GetStatus())
	}
	wg.Wait()
	all := time.Since(start)
	var longest time.Duration
	for i := range slow {
		if errs[i] != nil {
			t.Fatalf("slow check %d: %v", i, errs[i])
		}
		r := resps[i]
		if r.GetStatus().GetCode() == int32(code.Code_OK) {
			t.Fatalf("slow check %d allowed", i)
		}
		if body := r.GetDeniedResponse().GetBody(); body != "evaluation timed out" {
			t.Errorf("slow check %d denied with body %q, want \"evaluation timed out\"", i, body)
		}
		if st := r.GetDeniedResponse().GetStatus().GetCode(); st != 503 {
			t.Errorf("slow check %d: HTTP status %d, want 503", i, st)
		}
		longest = max(longest, took[i])
	}
	// Unlimited, each slow Check runs for minutes (10^8 iterations); a
	// generous bound still tells the limit from none on a loaded machine.
	if all > 20*time.Second {
		t.Errorf("40 slow checks took %s in all; the limit (%s) did not cut them", all, authz.DefaultEvalTimeout)
	}
	if normal > 10*time.Second {
		t.Errorf("a normal check during the attack took %s", normal)
	}
	rss1, hwm := rssKB(t, "VmRSS"), rssKB(t, "VmHWM")
	t.Logf("40 slow checks denied in %s (longest %s); normal check answered in %s; RSS %d MB -> %d MB, peak %d MB",
		all.Round(time.Millisecond), longest.Round(time.Millisecond), normal.Round(time.Millisecond), rss0>>10, rss1>>10, hwm>>10)
	if hwm-rss0 > 256<<10 {
		t.Errorf("peak RSS grew by %d MB during the attack", (hwm-rss0)>>10)
	}
	if n := counter(t, h.reg, "sigil_authz_limit_denials_total", "eval_timeout"); n != slow {
		t.Errorf("sigil_authz_limit_denials_total{limit=eval_timeout} = %v, want %d", n, slow)
	}
	timeouts := 0
	for _, e := range h.stopAndRead(t) {
		if e.Path == "/slow" {
			if e.Reason != string(engine.ReasonTimeout) || !strings.Contains(e.Detail, "evaluation timed out") || !strings.Contains(e.Detail, "limits.eval_timeout") {
				t.Errorf("logged slow decision: reason %q detail %q", e.Reason, e.Detail)
			}
			timeouts++
		}
	}
	if timeouts != slow {
		t.Errorf("decision log holds %d slow decisions, want %d", timeouts, slow)
	}
}

// Past max_concurrent_evals and max_queued, a Check is refused at once
// with reason overloaded; a queued one that gets no slot within
// eval_timeout too.
func TestOverloadRefusedFast(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, slowPolicy), Limits: authz.Limits{
		EvalTimeout: 2 * time.Second, MaxConcurrentEvals: 2, MaxQueued: 1,
	}})
	var wg sync.WaitGroup
	for range 3 { // two evaluate, one waits
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = h.client.Check(context.Background(), pathRequest("/slow")) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for gauge(t, h, "sigil_authz_evaluations_queued") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no check queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t0 := time.Now()
	r, err := h.client.Check(context.Background(), pathRequest("/ok"))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetStatus().GetCode() == int32(code.Code_OK) || r.GetDeniedResponse().GetBody() != "authorization overloaded" {
		t.Fatalf("check past the queue: %v %q, want denied as overloaded", r.GetStatus(), r.GetDeniedResponse().GetBody())
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("refusal past the queue took %s, want it at once", d)
	}
	wg.Wait()
	if n := counter(t, h.reg, "sigil_authz_limit_denials_total", "max_queued"); n != 1 {
		t.Errorf("max_queued denials = %v, want 1", n)
	}
	var overloaded int
	for _, e := range h.stopAndRead(t) {
		if e.Reason == string(authz.ReasonOverloaded) {
			overloaded++
			if !strings.Contains(e.Detail, "limits.max_") {
				t.Errorf("overloaded detail %q names no limit", e.Detail)
			}
		}
	}
	// The queued one races the two slots freeing at its own deadline:
	// it is either overloaded or timed out, never allowed.
	if overloaded < 1 {
		t.Errorf("%d overloaded decisions logged, want at least 1", overloaded)
	}
}

func TestBodyOverLimitDenied(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, slowPolicy), Limits: authz.Limits{MaxBodyBytes: 1000}})
	req := pathRequest("/ok")
	req.Attributes.Request.Http.Body = strings.Repeat("a", 600)
	req.Attributes.Request.Http.RawBody = []byte(strings.Repeat("b", 401))
	r, err := h.client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetStatus().GetCode() == int32(code.Code_OK) || r.GetDeniedResponse().GetStatus().GetCode() != 413 {
		t.Fatalf("1001-byte body: %v, want denied with 413", r)
	}
	req = pathRequest("/ok")
	req.Attributes.Request.Http.Body = strings.Repeat("a", 1000)
	if r, err = h.client.Check(context.Background(), req); err != nil || r.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("1000-byte body: %v %v, want allowed", r, err)
	}
	es := h.stopAndRead(t)
	if len(es) != 2 || es[0].Reason != string(authz.ReasonInputTooLarge) || !strings.Contains(es[0].Detail, "limits.max_body_bytes") {
		t.Fatalf("logged %+v", es)
	}
}

func gauge(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// A Check whose own deadline comes before the evaluation limit (as
// Envoy's ext_authz timeout does) is cut at that deadline: the server
// makes no timer of its own then, and must still stop evaluating.
func TestCallerDeadlineCutsEvaluation(t *testing.T) {
	h := start(t, authz.Config{Engine: newEngine(t, slowPolicy), Limits: authz.Limits{EvalTimeout: time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := h.client.Check(ctx, pathRequest("/slow")); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("slow check with a 300ms deadline: %v, want DeadlineExceeded", err)
	}
	// Unlimited, the slow policy evaluates for minutes; the denial is
	// counted once the evaluation stopped at the caller's deadline.
	for deadline := time.Now().Add(20 * time.Second); counter(t, h.reg, "sigil_authz_limit_denials_total", "eval_timeout") != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the evaluation was not cut at the caller's deadline within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every evaluation the limits allow at once runs on a long-lived stream
// worker (with its grown stack), not on a goroutine gRPC starts for a
// call that finds every worker busy: that fresh goroutine regrows its
// stack through Rego's recursion on every call, which cost 20% of the
// server's CPU per decision at 64 calls in flight.
func TestConcurrentEvalsRunOnStreamWorkers(t *testing.T) {
	const n = 24 // above the old 16 workers and 4×GOMAXPROCS on this box
	h := start(t, authz.Config{Engine: newEngine(t, slowPolicy), Limits: authz.Limits{
		EvalTimeout: 2 * time.Second, MaxConcurrentEvals: n,
	}})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = h.client.Check(context.Background(), pathRequest("/slow")) }()
	}
	defer wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for gauge(t, h, "sigil_authz_evaluations_in_flight") < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v evaluations in flight, want %d", gauge(t, h, "sigil_authz_evaluations_in_flight"), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var inCheck, onWorker int
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "authz.(*Server).Check(") {
			continue
		}
		inCheck++
		if strings.Contains(g, "google.golang.org/grpc.(*Server).serverWorker(") {
			onWorker++
		}
	}
	if inCheck != n || onWorker != n {
		t.Errorf("%d goroutines in Check, %d of them stream workers: want all %d on workers", inCheck, onWorker, n)
	}
}
