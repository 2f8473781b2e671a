package policytool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/tester"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/authz/policysrc"
)

// ErrTestsFailed is returned when at least one Rego test fails or errors.
var ErrTestsFailed = errors.New("policy tests failed")

// Test runs the Rego tests (test_* rules) found under paths and writes a
// report to w. It returns ErrTestsFailed if any test fails.
func Test(ctx context.Context, w io.Writer, paths []string, verbose bool) (passed int, err error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return 0, fmt.Errorf("policy test: %w", err)
		}
	}
	modules, store, err := tester.Load(paths, func(_ string, info fs.FileInfo, _ int) bool {
		return info.IsDir() && len(info.Name()) > 1 && info.Name()[0] == '.'
	})
	if err != nil {
		return 0, fmt.Errorf("load policies: %w", err)
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return 0, err
	}
	defer store.Abort(ctx, txn)
	ch, err := tester.NewRunner().SetStore(store).SetModules(modules).CapturePrintOutput(true).RunTests(ctx, txn)
	if err != nil {
		return 0, fmt.Errorf("run policy tests: %w", err)
	}
	var results []*tester.Result
	failed := 0
	for r := range ch {
		results = append(results, r)
		if r.Pass() {
			passed++
		} else if !r.Skip {
			failed++
		}
	}
	feed := make(chan *tester.Result, len(results))
	for _, r := range results {
		feed <- r
	}
	close(feed)
	if err := (tester.PrettyReporter{Output: w, Verbose: verbose, FailureLine: true}).Report(feed); err != nil {
		return passed, err
	}
	fmt.Fprintln(w)
	if failed > 0 {
		return passed, fmt.Errorf("%w: %d of %d", ErrTestsFailed, failed, failed+passed)
	}
	if passed == 0 {
		return 0, fmt.Errorf("policy test: no test_ rules found under %v", paths)
	}
	return passed, nil
}

// ReadCheckRequest reads a CheckRequest in protojson from a file.
func ReadCheckRequest(path string) (*authv3.CheckRequest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read check request: %w", err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("check request %s: %w", path, err)
	}
	return &req, nil
}

// Eval decides req with the policy in dir at decision path.
func Eval(ctx context.Context, dir, path string, req *authv3.CheckRequest) (engine.Decision, error) {
	p, err := policysrc.Dir{Path: dir}.Load(ctx)
	if err != nil {
		return engine.Decision{}, err
	}
	prep, err := engine.Prepare(ctx, p, path)
	if err != nil {
		return engine.Decision{}, err
	}
	in, err := input.Build(req, input.Options{})
	if err != nil {
		return engine.Deny(engine.ReasonBadRequest, err.Error(), p.Revision), nil
	}
	return prep.Decide(ctx, in), nil
}
