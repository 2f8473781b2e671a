package socketlimit_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/socketlimit"
	"github.com/sigilhq/sigil/agent/workloadapi"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
)

type env struct {
	sock string
	reg  *prometheus.Registry
}

// serve runs the real Workload API server (an entry for this process's
// uid) on a unix socket with the limiter's server options.
func serve(t *testing.T, cfg socketlimit.Config) *env {
	t.Helper()
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	src := workloadtest.New(t, ca)
	sels, err := selector.ParseAll([]string{"unix:uid:" + strconv.Itoa(os.Getuid())})
	if err != nil {
		t.Fatal(err)
	}
	src.Put(workloadtest.Entry{ID: "me", Selectors: sels, SVID: ca.Issue(t, "spiffe://example.org/me")})
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := workloadapi.New(workloadapi.Config{Source: src, Attestor: att})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{reg: prometheus.NewRegistry()}
	cfg.Metrics = e.reg
	lim, err := socketlimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(lim.ServerOptions(peercred.NewCredentials())...)
	wl.Register(g)
	dir, err := os.MkdirTemp("", "lim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sock = filepath.Join(dir, "agent.sock")
	ln, err := workloadapi.Listen(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return e
}

func (e *env) client(t *testing.T) workloadpb.SpiffeWorkloadAPIClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return workloadpb.NewSpiffeWorkloadAPIClient(cc)
}

func (e *env) value(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func callCtx(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	return metadata.AppendToOutgoingContext(ctx, workloadapi.Header, "true"), cancel
}

// open opens a FetchJWTBundles stream and waits for its first message (or
// its refusal).
func open(t *testing.T, c workloadpb.SpiffeWorkloadAPIClient) (cancel context.CancelFunc, err error) {
	t.Helper()
	ctx, cancel := callCtx(t)
	s, err := c.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		cancel()
	}
	return cancel, err
}

func wantRefusal(t *testing.T, err error, limit string) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "limits."+limit) {
		t.Fatalf("got %v, want ResourceExhausted naming limits.%s", err, limit)
	}
}

func TestStreamLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   socketlimit.Config
		n     int
		limit string
	}{
		{"per uid", socketlimit.Config{StreamsPerUID: 5, Streams: 100}, 5, socketlimit.LimitStreamsPerUID},
		{"total", socketlimit.Config{StreamsPerUID: 100, Streams: 4}, 4, socketlimit.LimitStreams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := serve(t, tc.cfg)
			c := e.client(t)
			var held []context.CancelFunc
			for i := range tc.n {
				cancel, err := open(t, c)
				if err != nil {
					t.Fatalf("stream %d: %v", i, err)
				}
				held = append(held, cancel)
			}
			_, err := open(t, c)
			wantRefusal(t, err, tc.limit)
			ctx, cancel := callCtx(t)
			defer cancel()
			_, err = c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"a"}})
			wantRefusal(t, err, tc.limit) // unary calls count too
			if got := e.value(t, "sigil_agent_socket_refusals_total", tc.limit); got != 2 {
				t.Fatalf("refusals = %v", got)
			}
			if got := e.value(t, "sigil_agent_socket_calls", ""); got != float64(tc.n) {
				t.Fatalf("calls gauge = %v", got)
			}
			// A closed stream gives its slot back.
			held[0]()
			deadline := time.Now().Add(30 * time.Second)
			for {
				cancel, err := open(t, c)
				if err == nil {
					cancel()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("slot never freed: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, h := range held[1:] {
				h()
			}
		})
	}
}

func TestConnectionLimit(t *testing.T) {
	e := serve(t, socketlimit.Config{ConnsPerUID: 2})
	for i := range 2 {
		if cancel, err := open(t, e.client(t)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		} else {
			defer cancel()
		}
	}
	_, err := open(t, e.client(t))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("third connection: %v, want Unavailable (closed in the handshake)", err)
	}
	if got := e.value(t, "sigil_agent_socket_refusals_total", socketlimit.LimitConnsPerUID); got < 1 {
		t.Fatalf("connection refusals = %v", got)
	}
	if got := e.value(t, "sigil_agent_socket_busiest_uid_connections", ""); got != 2 {
		t.Fatalf("busiest uid connections = %v", got)
	}
}

// FetchJWTSVID may make the agent mint on the CA: a uid gets a burst, then
// the rate.
func TestJWTSVIDRate(t *testing.T) {
	fake := clock.NewFake(time.Unix(1e9, 0))
	e := serve(t, socketlimit.Config{JWTSVIDRate: 1, JWTSVIDBurst: 3, Clock: fake})
	c := e.client(t)
	fetch := func() error {
		ctx, cancel := callCtx(t)
		defer cancel()
		_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"a"}})
		return err
	}
	for i := range 3 {
		if err := fetch(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	wantRefusal(t, fetch(), socketlimit.LimitJWTSVIDRate)
	fake.Advance(time.Second)
	if err := fetch(); err != nil {
		t.Fatalf("after a second: %v", err)
	}
	wantRefusal(t, fetch(), socketlimit.LimitJWTSVIDRate)
}

func TestNewRejectsNegative(t *testing.T) {
	for _, cfg := range []socketlimit.Config{{Streams: -1}, {ConnsPerUID: -1}, {JWTSVIDRate: -1}} {
		if _, err := socketlimit.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
