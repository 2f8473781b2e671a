package difftest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/policysrc"
)

const howToGet = "opa-envoy-plugin v1.10.0-envoy is needed: run hack/setup/40-opa-envoy-plugin.sh (builds it into ~/.cache/sigil/tools) and put it on PATH, or set SIGIL_OPA_ENVOY_PLUGIN to its path"

// pluginAddr is the ext_authz address of the one opa-envoy-plugin process
// this test binary starts, or "" with pluginErr set.
var (
	pluginAddr string
	pluginErr  error
)

func TestMain(m *testing.M) {
	stop, err := startPlugin()
	if err != nil {
		pluginErr = err
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

func findPlugin() (string, error) {
	if p := os.Getenv("SIGIL_OPA_ENVOY_PLUGIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("opa-envoy-plugin"); err == nil {
		return p, nil
	}
	// The setup script's default location, relative to this package.
	p, _ := filepath.Abs(filepath.Join("..", "..", ".cache", "tools", "opa-envoy-plugin"))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New(howToGet)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startPlugin() (func(), error) {
	bin, err := findPlugin()
	if err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	pluginAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run", "--server",
		fmt.Sprintf("--addr=127.0.0.1:%d", ports[0]),
		fmt.Sprintf("--diagnostic-addr=127.0.0.1:%d", ports[1]),
		"--log-level=error",
		"--set=plugins.envoy_ext_authz_grpc.addr="+pluginAddr,
		"--set=plugins.envoy_ext_authz_grpc.path=envoy/authz/allow",
		filepath.Join("..", "testdata", "difftest"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w (%s)", bin, err, howToGet)
	}
	stop := func() { cancel(); _ = cmd.Wait() }
	// Wait until the plugin answers Check.
	conn, err := grpc.NewClient(pluginAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.Check(cctx, &authv3.CheckRequest{})
		ccancel()
		if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("opa-envoy-plugin did not answer within 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// outcome is what Envoy would act on, normalised for comparison.
type outcome struct {
	Allowed bool
	// Failed is true when the decision was a failure (plugin: gRPC error;
	// Sigil: a fail-closed reason); only Allowed is compared then.
	Failed          bool
	HTTPStatus      int32
	Body            string
	Headers         []string
	HeadersToRemove []string
	ResponseHeaders []string
	Metadata        string
}

func (o outcome) String() string { type plain outcome; return fmt.Sprintf("%+v", plain(o)) }

func normalise(resp *authv3.CheckResponse, err error) outcome {
	if err != nil {
		return outcome{Failed: true}
	}
	o := outcome{Allowed: code.Code(resp.GetStatus().GetCode()) == code.Code_OK}
	if ok := resp.GetOkResponse(); ok != nil {
		for _, h := range ok.GetHeaders() {
			o.Headers = append(o.Headers, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
		o.HeadersToRemove = ok.GetHeadersToRemove()
		for _, h := range ok.GetResponseHeadersToAdd() {
			o.ResponseHeaders = append(o.ResponseHeaders, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
	}
	if d := resp.GetDeniedResponse(); d != nil {
		o.HTTPStatus = int32(d.GetStatus().GetCode())
		o.Body = d.GetBody()
		for _, h := range d.GetHeaders() {
			o.Headers = append(o.Headers, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
	}
	sort.Strings(o.Headers)
	sort.Strings(o.ResponseHeaders)
	if md := resp.GetDynamicMetadata(); md != nil {
		md = proto.Clone(md).(*structpb.Struct)
		delete(md.Fields, "decision_id")
		if len(md.Fields) > 0 {
			b, _ := protojson.MarshalOptions{}.Marshal(md)
			o.Metadata = string(b)
		}
	}
	return o
}

func loadCorpus(t *testing.T) map[string]*authv3.CheckRequest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "requests", "*.json"))
	if err != nil || len(files) < 20 {
		t.Fatalf("corpus has %d requests (%v), want at least 20", len(files), err)
	}
	out := map[string]*authv3.CheckRequest{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(raw, &req); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = &req
	}
	return out
}

func withMode(req *authv3.CheckRequest, mode string) *authv3.CheckRequest {
	if mode == "echo" {
		return req
	}
	req = proto.Clone(req).(*authv3.CheckRequest)
	if req.Attributes == nil {
		req.Attributes = &authv3.AttributeContext{}
	}
	if req.Attributes.ContextExtensions == nil {
		req.Attributes.ContextExtensions = map[string]string{}
	}
	req.Attributes.ContextExtensions["difftest"] = mode
	return req
}

func TestSameDecisionsAsOPAEnvoyPlugin(t *testing.T) {
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	ctx := context.Background()
	p, err := policysrc.Dir{Path: filepath.Join("..", "testdata", "difftest")}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New("envoy/authz/allow")
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Load(ctx, p); err != nil {
		t.Fatal(err)
	}
	sigil, err := authz.New(authz.Config{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(pluginAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	plugin := authv3.NewAuthorizationClient(conn)

	corpus := loadCorpus(t)
	names := make([]string, 0, len(corpus))
	for n := range corpus {
		names = append(names, n)
	}
	sort.Strings(names)
	allowed, denied := 0, 0
	for _, mode := range []string{"echo", "mesh", "object", "illtyped", "badobject", "badheaders", "undefined"} {
		for _, name := range names {
			t.Run(mode+"/"+name, func(t *testing.T) {
				req := withMode(corpus[name], mode)
				want := normalise(plugin.Check(ctx, req))
				resp, err := sigil.Check(ctx, req)
				if err != nil {
					t.Fatalf("sigil returned an error, it must deny instead: %v", err)
				}
				got := normalise(resp, nil)
				if want.Failed {
					if got.Allowed {
						t.Fatalf("plugin failed closed, sigil allowed")
					}
					return
				}
				if want.HTTPStatus == 400 || got.HTTPStatus == 400 {
					// Both reject malformed requests with HTTP 400; the
					// body wording is each one's own.
					if got.Allowed || got.HTTPStatus != 400 || want.HTTPStatus != 400 {
						t.Fatalf("malformed request: plugin %v, sigil %v", want, got)
					}
					return
				}
				if got.String() != want.String() {
					t.Fatalf("decisions differ\nplugin: %v\nsigil:  %v", want, got)
				}
				if got.Allowed {
					allowed++
				} else {
					denied++
				}
			})
		}
	}
	t.Logf("identical decisions: %d allowed, %d denied", allowed, denied)
	if allowed == 0 || denied == 0 {
		t.Fatalf("corpus exercised only one outcome (allowed %d, denied %d)", allowed, denied)
	}
}
