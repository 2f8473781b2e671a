package input_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/internal/benchcpu"
)

func loadRequest(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "requests", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &req
}

// query evaluates a Rego expression over the input Build made.
func query(t *testing.T, in ast.Value, q string) string {
	t.Helper()
	pq, err := rego.New(rego.Query("x := " + q)).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := pq.Eval(context.Background(), rego.EvalParsedInput(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		return "<undefined>"
	}
	v, err := ast.InterfaceToValue(rs[0].Bindings["x"])
	if err != nil {
		t.Fatal(err)
	}
	return v.String()
}

func TestBuild(t *testing.T) {
	tests := []struct {
		request, expr, want string
	}{
		{"01-mtls-allowed-get", "input.attributes.source.principal", `"spiffe://example.org/ns/shop/sa/frontend"`},
		{"01-mtls-allowed-get", "input.source_principal", `"spiffe://example.org/ns/shop/sa/frontend"`},
		{"01-mtls-allowed-get", "input.attributes.destination.address.socketAddress.portValue", `8080`},
		{"01-mtls-allowed-get", "input.attributes.request.time", `{"nanos": 123456789, "seconds": 1795435200}`},
		{"01-mtls-allowed-get", "input.parsed_path", `["items"]`},
		{"01-mtls-allowed-get", "input.parsed_body", `null`},
		{"01-mtls-allowed-get", "input.truncated_body", `false`},
		{"01-mtls-allowed-get", "input.version", `{"encoding": "protojson", "ext_authz": "v3"}`},
		{"01-mtls-allowed-get", "input.sigil.source", `{"id": "spiffe://example.org/ns/shop/sa/frontend", "path": "/ns/shop/sa/frontend", "segments": ["ns", "shop", "sa", "frontend"], "trust_domain": "example.org"}`},
		{"01-mtls-allowed-get", "input.sigil.destination.segments[3]", `"cart"`},
		{"04-no-principals", "input.sigil", `{}`},
		{"04-no-principals", "input.source_principal", `<undefined>`},
		{"24-non-spiffe-principal", "input.sigil", `{}`},
		{"24-non-spiffe-principal", "input.attributes.source.principal", `"CN=frontend,O=shop"`},
		{"07-query-params", "input.parsed_query", `{"empty": [""], "q": ["shoes"], "size": ["42", "43"], "x": [" y"]}`},
		{"08-json-body", "input.parsed_body", `{"gift": true, "item": "shoe", "price": 19.99, "qty": 2}`},
		{"09-json-body-truncated", "[input.parsed_body, input.truncated_body]", `[null, true]`},
		{"10-form-body", "input.parsed_body", `{"role": ["admin", "dev"], "user": ["alice"]}`},
		{"11-grpc-call", "[input.parsed_path, input.parsed_body]", `[["shop.Cart", "AddItem"], null]`},
		{"11-grpc-call", "input.attributes.request.http.rawBody", `"AAAAAAUKA2FiYw=="`},
		{"13-empty-request", "input", `{"parsed_body": null, "parsed_path": [""], "parsed_query": {}, "sigil": {}, "truncated_body": false, "version": {"encoding": "protojson", "ext_authz": "v3"}}`},
		{"16-metadata-context", "input.attributes.metadataContext.filterMetadata[\"envoy.filters.http.jwt_authn\"].claims", `{"big": 1e+21, "frac": 0.25, "n": 3, "nil": null, "scope": ["read", "write"], "sub": "alice"}`},
		{"20-unicode-and-escapes", "input.parsed_path", `["café", "✓"]`},
		{"23-json-array-body-nested", "input.parsed_body[1]", `12345678901234567890`},
	}
	for _, tt := range tests {
		t.Run(tt.request+"/"+tt.expr, func(t *testing.T) {
			in, err := input.Build(loadRequest(t, tt.request), input.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := query(t, in, tt.expr); got != tt.want {
				t.Errorf("%s = %s, want %s", tt.expr, got, tt.want)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	for _, tt := range []struct{ request, field string }{
		{"21-bad-json-body", "body"},
		{"22-bad-path", "path"},
	} {
		t.Run(tt.request, func(t *testing.T) {
			_, err := input.Build(loadRequest(t, tt.request), input.Options{})
			var ie *input.Error
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("Build error = %v, want input error on %s", err, tt.field)
			}
		})
	}
}

func TestSkipBody(t *testing.T) {
	in, err := input.Build(loadRequest(t, "21-bad-json-body"), input.Options{SkipBody: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := query(t, in, "input.parsed_body"); got != "<undefined>" {
		t.Fatalf("parsed_body with SkipBody = %s", got)
	}
}

func TestLazyMatchesEager(t *testing.T) {
	fast := input.NewBuilder(input.Options{})
	slow := input.NewReflectiveBuilder(input.Options{})
	for i, req := range corpus(t) {
		a, errA := fast.Build(req)
		b, errB := slow.Build(req)
		if (errA == nil) != (errB == nil) || (errA == nil && a.Compare(b) != 0) {
			t.Fatalf("request %d: lazy %v (%v) != eager %v (%v)", i, a, errA, b, errB)
		}
	}
}

func corpus(t testing.TB) []*authv3.CheckRequest {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "requests", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("corpus: %v", err)
	}
	var out []*authv3.CheckRequest
	for _, f := range files {
		out = append(out, loadRequest(t, strings.TrimSuffix(filepath.Base(f), ".json")))
	}
	return out
}

func FuzzBuild(f *testing.F) {
	for _, req := range corpus(f) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return
		}
		in, err := input.Build(&req, input.Options{})
		if err != nil {
			return
		}
		// The input must be plain JSON data a policy can read back.
		if _, err := ast.JSON(in); err != nil {
			t.Fatalf("input is not JSON data: %v", err)
		}
		// The lazy input, forced, must equal the eager reflective walk.
		slow, err := input.NewReflectiveBuilder(input.Options{}).Build(&req)
		if err != nil || slow.Compare(in) != 0 {
			t.Fatalf("lazy and eager builders differ: %v\nfast: %v\nslow: %v", err, in, slow)
		}
		again, err := input.Build(&req, input.Options{})
		if err != nil || again.Compare(in) != 0 {
			t.Fatalf("Build is not deterministic: %v", err)
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	req := loadRequest(b, "06-bearer-header")
	builder := input.NewBuilder(input.Options{})
	b.ReportAllocs()
	defer benchcpu.Start(b)()
	for b.Loop() {
		if _, err := builder.Build(req); err != nil {
			b.Fatal(err)
		}
	}
}

// One Builder serves every request: its per-principal and per-destination
// caches must give the same inputs as a fresh eager build, also past their
// bounds and concurrently.
func TestSharedBuilderCache(t *testing.T) {
	fast := input.NewBuilder(input.Options{})
	slow := input.NewReflectiveBuilder(input.Options{})
	base := loadRequest(t, "06-bearer-header")
	n := input.MaxCachedIDs + input.MaxCachedIDs/2
	errc := make(chan error, 4)
	for w := range 4 {
		go func() {
			for i := w; i < n; i += 4 {
				req := proto.Clone(base).(*authv3.CheckRequest)
				// Principals repeat (cache hits) and overflow the bound;
				// some are not SPIFFE IDs.
				req.Attributes.Source.Principal = fmt.Sprintf("spiffe://example.org/ns/n%d/sa/s", i%(n/2))
				if i%7 == 0 {
					req.Attributes.Destination.Principal = fmt.Sprintf("not an id %d", i)
				}
				// Destinations repeat with other principals and fields
				// (port 5 with and without a service), and overflow.
				port := uint32(i % 97)
				if i%2 == 1 {
					port = uint32(i % (input.MaxCachedPeers + 200))
				}
				req.Attributes.Destination.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.0.0.%d", i%3), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
				}}}
				if i%5 == 0 {
					req.Attributes.Destination.Service = "svc"
				}
				a, errA := fast.Build(req)
				b, errB := slow.Build(req)
				if errA != nil || errB != nil || a.Compare(b) != 0 {
					errc <- fmt.Errorf("request %d: cached %v (%v) != eager %v (%v)", i, a, errA, b, errB)
					return
				}
			}
			errc <- nil
		}()
	}
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}
