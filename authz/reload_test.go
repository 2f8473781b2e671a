package authz_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/sigilhq/sigil/authz"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/policysrc"
)

// revision n allows the request through a different rule each time, so
// every revision allows it; a request that fails or is denied means a
// reload leaked into the request path.
func revision(n int) string {
	return fmt.Sprintf(`package envoy.authz

default allow := false

rev := %d

allow if {
	rev == %d
	input.sigil.source.trust_domain == "example.org"
}
`, n, n)
}

func writePolicy(t *testing.T, dir, src string) {
	t.Helper()
	// Written beside the directory, then renamed in, as a careful operator
	// (or a Kubernetes ConfigMap update) does.
	tmp := filepath.Join(filepath.Dir(dir), "policy.rego.tmp")
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
}

func TestHotReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, revision(0))
	eng, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	// The test is about reloads, not the evaluation deadline: on a loaded
	// machine a Check can wait past the default 200 ms and be denied.
	h := start(t, authz.Config{Engine: eng, Limits: authz.Limits{EvalTimeout: time.Minute}})
	m, err := authz.NewMetrics(h.reg2())
	if err != nil {
		t.Fatal(err)
	}
	r := &authz.Reloader{Name: "enforced", Source: policysrc.Dir{Path: dir}, Target: eng, Interval: 5 * time.Millisecond, Metrics: m}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Once(ctx); err != nil {
		t.Fatal(err)
	}
	reloadDone := make(chan struct{})
	go func() { _ = r.Run(ctx); close(reloadDone) }()

	req := loadRequest(t, "01-mtls-allowed-get")
	var calls, failures atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	loadCtx, stopLoad := context.WithCancel(ctx)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				resp, err := h.client.Check(context.Background(), req)
				calls.Add(1)
				if err != nil || code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%v %v %v", resp.GetStatus(), resp.GetDeniedResponse().GetBody(), err))
				}
			}
		}()
	}
	// Change the policy 30 times, with a broken revision every 10th time.
	seen := map[string]bool{eng.Revision(): true}
	for i := 1; i <= 30; i++ {
		if i%10 == 0 {
			writePolicy(t, dir, "package envoy.authz\nallow if {")
			time.Sleep(30 * time.Millisecond) // several polls see the broken policy
			continue
		}
		writePolicy(t, dir, revision(i))
		deadline := time.Now().Add(10 * time.Second)
		for seen[eng.Revision()] {
			if time.Now().After(deadline) {
				t.Fatalf("revision %d never loaded", i)
			}
			time.Sleep(time.Millisecond)
		}
		seen[eng.Revision()] = true
	}
	stopLoad()
	wg.Wait()
	cancel()
	<-reloadDone

	if calls.Load() == 0 {
		t.Fatal("no load was generated")
	}
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d checks failed or were denied during reloads; first: %v", n, calls.Load(), firstFailure.Load())
	}
	if got := counter(t, h.reg2(), "sigil_authz_policy_reload_failures_total"); got != 3 {
		t.Errorf("refused revisions counted = %v, want 3 (one per broken revision, not per poll)", got)
	}
	revs := map[string]bool{}
	for _, e := range h.stopAndRead(t) {
		revs[e.Revision] = true
	}
	t.Logf("%d checks across %d policy revisions, all allowed", calls.Load(), len(revs))
	if len(revs) < 2 {
		t.Errorf("decisions came from %d revision(s); reloads did not reach requests", len(revs))
	}
}
