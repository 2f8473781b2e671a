package replay_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/replay"
)

const enforced = `package envoy.authz

default allow := false

allow if input.sigil.source.trust_domain == "example.org"
`

// candidate also requires GET, and lets a bearer-less foreign caller in.
const candidate = `package envoy.authz

default allow := false

allow if {
	input.sigil.source.trust_domain == "example.org"
	input.attributes.request.http.method == "GET"
}

allow if input.sigil.source.trust_domain == "evil.org"
`

func prepare(t *testing.T, src, rev string) *engine.Prepared {
	t.Helper()
	p, err := engine.Prepare(context.Background(), engine.Policy{Revision: rev, Modules: map[string]string{"p.rego": src}}, "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func request(t *testing.T, name string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "requests", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	return &req
}

func TestReplay(t *testing.T) {
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	dl, err := decisionlog.New(decisionlog.Config{Sinks: []decisionlog.Sink{decisionlog.NewFileSink(logPath, 0, 0)}, LogRequest: true})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Load(ctx, engine.Policy{Revision: "enforced", Modules: map[string]string{"p.rego": enforced}}); err != nil {
		t.Fatal(err)
	}
	srv, err := authz.New(authz.Config{Engine: eng, Log: dl})
	if err != nil {
		t.Fatal(err)
	}
	// 01: GET from example.org (allow, stays allow); 03: POST (allow -> deny)
	// twice; 05: evil.org (deny -> allow); 04: no identity (deny, stays deny).
	for _, name := range []string{"01-mtls-allowed-get", "03-mtls-post-admin", "03-mtls-post-admin", "05-foreign-trust-domain", "04-no-principals"} {
		if _, err := srv.Check(ctx, request(t, name)); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	cancel()
	if err := dl.Run(runCtx); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := replay.Run(ctx, f, prepare(t, candidate, "candidate"), input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 5 || rep.Unchanged != 2 || len(rep.Changes) != 3 {
		t.Fatalf("report = %+v", rep)
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"allow -> deny:   2",
		"deny -> allow:   1",
		"2x  spiffe://example.org/ns/shop/sa/frontend -> spiffe://example.org/ns/shop/sa/cart  POST /admin/reset",
		"1x  spiffe://evil.org/ns/shop/sa/frontend -> spiffe://example.org/ns/shop/sa/cart  GET /items",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}

	// The same policy replays with no changes.
	f2, _ := os.Open(logPath)
	defer f2.Close()
	same, err := replay.Run(ctx, f2, prepare(t, enforced, "same"), input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(same.Changes) != 0 || same.Unchanged != 5 {
		t.Fatalf("replaying the enforced policy changed decisions: %+v", same)
	}
}
