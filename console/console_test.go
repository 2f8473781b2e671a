package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread/decisionreadtest"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/console"
)

// fakeAdmin answers like the admin API; the real one is exercised by the
// browser test in hack/e2e/console.
type fakeAdmin struct {
	entries []*typesv1.Entry
	err     error
}

func (f *fakeAdmin) ListEntries(_ context.Context, in *adminv1.ListEntriesRequest, _ ...grpc.CallOption) (*adminv1.ListEntriesResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &adminv1.ListEntriesResponse{Entries: f.entries}, nil
}

func (f *fakeAdmin) ListAgents(context.Context, *adminv1.ListAgentsRequest, ...grpc.CallOption) (*adminv1.ListAgentsResponse, error) {
	return &adminv1.ListAgentsResponse{}, f.err
}

func (f *fakeAdmin) CAStatus(context.Context, *adminv1.CAStatusRequest, ...grpc.CallOption) (*adminv1.CAStatusResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &adminv1.CAStatusResponse{TrustDomain: "example.org", Keys: []*adminv1.CAKey{{Kind: adminv1.KeyKind_KEY_KIND_X509, Id: "k1", State: "active", NotAfter: timestamppb.New(time.Unix(1_900_000_000, 0))}}}, nil
}

func (f *fakeAdmin) GetBundle(context.Context, *adminv1.GetBundleRequest, ...grpc.CallOption) (*adminv1.GetBundleResponse, error) {
	return &adminv1.GetBundleResponse{Bundle: &typesv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{[]byte("not a certificate")}}}, f.err
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestPagesAndBadInput(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	decisionreadtest.WriteLog(t, logPath, 3, func(i int) decisionreadtest.Decision {
		return decisionreadtest.Decision{Entry: decisionlog.Entry{
			DecisionID: fmt.Sprintf("d%d", i), Time: time.Unix(1_800_000_000, 0), Source: "spiffe://example.org/a<script>",
			Destination: "spiffe://example.org/b", Method: "GET", Path: "/", Result: decisionlog.ResultDeny, Reason: "denied",
		}}
	})
	policy := func(context.Context) (engine.Policy, error) {
		return engine.Policy{Revision: "r1", Modules: map[string]string{"p.rego": "package envoy.authz\n\ndefault allow := false\n"}}, nil
	}
	fa := &fakeAdmin{entries: []*typesv1.Entry{{Id: "e1", SpiffeId: "spiffe://example.org/x"}}}
	srv, err := console.New(console.Config{Admin: fa, DecisionLog: logPath, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/", 200, "example.org"},
		{"/entries", 200, "spiffe://example.org/x"},
		{"/entries?limit=0", 400, "limit"},
		{"/entries?limit=100000", 400, "from 1 to 500"},
		{"/agents", 200, "0</span> agents"},
		{"/ca", 200, "(unparseable certificate)"},
		{"/decisions", 200, `<span id="decision-count">3</span>`},
		{"/decisions?result=maybe", 400, "want allow or deny"},
		{"/decisions?before=x", 400, "want a decision seq"},
		{"/decisions?limit=1", 200, "Older decisions"},
		{"/decisions/abc", 400, "want a seq number"},
		{"/decisions/99999", 404, "not found"},
		{"/decisions/1", 200, "default allow := false"},
		{"/graph", 200, "no data.sigil.edges allow-list"},
		{"/graph?scan=-1", 400, "scan"},
		{"/nope", 404, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := get(t, h, tc.path)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("GET %s: %d, want %d containing %q:\n%s", tc.path, code, tc.code, tc.want, body)
			}
			if strings.Contains(body, "<script>") {
				t.Fatalf("GET %s: unescaped markup from the log", tc.path)
			}
		})
	}
	t.Run("writes are refused", func(t *testing.T) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/entries", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("POST: %d", rec.Code)
		}
	})
	t.Run("admin api down", func(t *testing.T) {
		fa.err = status.Error(codes.Unavailable, "connection refused")
		defer func() { fa.err = nil }()
		code, body := get(t, h, "/entries")
		if code != http.StatusBadGateway || !strings.Contains(body, "unavailable: connection refused") || strings.Contains(body, "rpc error") {
			t.Fatalf("%d %s", code, body)
		}
	})
}

func TestNoDecisionLog(t *testing.T) {
	srv, err := console.New(console.Config{Admin: &fakeAdmin{}})
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, srv.Handler(), "/decisions")
	if code != http.StatusNotFound || !strings.Contains(body, "sigil console --decision-log PATH") {
		t.Fatalf("%d %s", code, body)
	}
	code, body = get(t, srv.Handler(), "/graph")
	if code != http.StatusOK || !strings.Contains(body, "no policy") {
		t.Fatalf("%d %s", code, body)
	}
}

func TestAuthorize(t *testing.T) {
	srv, err := console.New(console.Config{Admin: &fakeAdmin{}, Authorize: func(*http.Request) error { return errors.New("no admin svid") }})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.Handler(), "/"); code != http.StatusForbidden || !strings.Contains(body, "admin X509-SVID") {
		t.Fatalf("%d %s", code, body)
	}
}

func TestNew(t *testing.T) {
	if _, err := console.New(console.Config{}); err == nil {
		t.Fatal("no admin client accepted")
	}
	if _, err := console.New(console.Config{Admin: &fakeAdmin{}, DecisionPath: "data.x[y]"}); err == nil {
		t.Fatal("bad decision path accepted")
	}
}
