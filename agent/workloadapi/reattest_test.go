package workloadapi_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/workloadapi"
	"github.com/sigilhq/sigil/internal/selector"
)

// switchable is an attestor whose answer the test sets, and a Watcher
// that wakes every open stream when it does, as the k8s attestor does
// when a pod is deleted or relabelled.
type switchable struct {
	mu       sync.Mutex
	sels     []selector.Selector
	err      error
	changed  chan struct{}
	watching int
}

var _ attest.Watcher = (*switchable)(nil)

func newSwitchable(sels []selector.Selector) *switchable {
	return &switchable{sels: sels, changed: make(chan struct{})}
}

func (a *switchable) Attest(context.Context, peercred.Info) ([]selector.Selector, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sels, a.err
}

func (a *switchable) Watch(peercred.Info) (<-chan struct{}, func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.watching++
	var once sync.Once
	return a.changed, func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.watching--
		})
	}
}

func (a *switchable) set(sels []selector.Selector, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sels, a.err = sels, err
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *switchable) watches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.watching
}

// jwtBundleWatcher records the errors of a go-spiffe JWT bundle watch.
type jwtBundleWatcher struct {
	updates chan *jwtbundle.Set
	errs    chan error
}

func (w jwtBundleWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) { w.updates <- s }
func (w jwtBundleWatcher) OnJWTBundlesWatchError(err error) {
	if status.Code(err) != codes.Canceled {
		w.errs <- err
	}
}

// An open stream attests its caller again when the attestor says the
// caller's selectors may have changed: new selectors bring the identities
// they hold; a refusal ends X509-SVID and JWT bundle streams with
// PermissionDenied and the attestor's reason, which go-spiffe's watchers
// see.
func TestStreamsAttestAgain(t *testing.T) {
	att := newSwitchable(sels(t, "unix:uid:0"))
	e := startWith(t, att)
	ctx, cancel := context.WithCancel(t.Context())
	x := newX509Watcher()
	j := jwtBundleWatcher{updates: make(chan *jwtbundle.Set, 16), errs: make(chan error, 16)}
	done := make(chan error, 2)
	go func() { done <- gsw.WatchX509Context(ctx, x, e.addr, gsw.WithBackoffStrategy(fastBackoff{})) }()
	go func() { done <- gsw.WatchJWTBundles(ctx, j, e.addr, gsw.WithBackoffStrategy(fastBackoff{})) }()
	defer func() {
		cancel()
		<-done
		<-done
	}()
	if c := x.next(t, "initial"); c.DefaultSVID().ID.String() != "spiffe://example.org/root" {
		t.Fatalf("initial %s", c.DefaultSVID().ID)
	}
	select {
	case <-j.updates:
	case err := <-j.errs:
		t.Fatalf("jwt bundles: %v", err)
	case <-time.After(generous):
		t.Fatal("no jwt bundles")
	}
	waitFor(t, "both streams to watch their caller", func() bool { return att.watches() == 2 })

	// The same selectors again: nothing changes for the client.
	att.set(sels(t, "unix:uid:0"), nil)
	// Other selectors: the stream follows what they hold.
	att.set(sels(t, "unix:uid:65534"), nil)
	x.until(t, "relabelled", func(c *gsw.X509Context) bool {
		return len(c.SVIDs) == 1 && c.DefaultSVID().ID.String() == "spiffe://example.org/nobody"
	})

	// Refused (the pod is gone): both streams end with the reason.
	reason := "kubernetes workload refused: pod 1234 was deleted"
	att.set(nil, fmt.Errorf("k8s attest pid 7: %w", &refusal{reason}))
	for what, errs := range map[string]chan error{"x509": x.errs, "jwt bundles": j.errs} {
		select {
		case err := <-errs:
			wantCode(t, what+" after refusal", err, codes.PermissionDenied)
			if !strings.Contains(status.Convert(err).Message(), reason) {
				t.Fatalf("%s: message %q lacks the reason %q", what, status.Convert(err).Message(), reason)
			}
		case c := <-x.updates:
			t.Fatalf("%s: update with %d SVIDs after refusal, want PermissionDenied", what, len(c.SVIDs))
		case <-time.After(generous):
			t.Fatalf("%s: no error within %s of the refusal", what, generous)
		}
	}
	if n := e.rec.count("FetchX509SVID PermissionDenied"); n == 0 {
		t.Fatal("the ended stream was not counted as PermissionDenied")
	}
	// go-spiffe retries, and is refused at once each time; no watch leaks.
	waitFor(t, "streams to release their watches", func() bool { return att.watches() <= 2 })
}

// refusal is a refusal as an attestor words it.
type refusal struct{ why string }

func (r *refusal) Error() string        { return r.why }
func (r *refusal) Is(target error) bool { return target == attest.ErrRefused }

// A caller the attestor refuses gets PermissionDenied with the reason from
// every method; the agent's own failure stays Internal and tells no
// detail; a caller no attestor applies to is refused.
func TestAttestationStatus(t *testing.T) {
	tests := []struct {
		name     string
		att      workloadapi.Attestor
		code     codes.Code
		says     string
		withheld string
	}{
		{name: "pod unknown", att: failing{fmt.Errorf("k8s attest pid 9: %w", &refusal{"kubernetes workload refused: pod 42 is not on node n after waiting 5s"})},
			code: codes.PermissionDenied, says: "pod 42 is not on node n after waiting 5s"},
		{name: "container not found", att: failing{fmt.Errorf("k8s attest pid 9: %w", &refusal{"kubernetes workload refused: container c is not in the status of pod ns/p"})},
			code: codes.PermissionDenied, says: "container c is not in the status of pod ns/p"},
		{name: "no attestor applies", att: attest.Chain{failing{fmt.Errorf("x: %w", attest.ErrNotApplicable)}},
			code: codes.PermissionDenied, says: "no attestor applies"},
		{name: "internal failure", att: failing{errors.New("read cgroup: open /proc/9/cgroup: input/output error")},
			code: codes.Internal, says: "workload attestation failed", withheld: "/proc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startWith(t, tt.att)
			ctx := t.Context()
			_, errX := gsw.FetchX509SVID(ctx, e.addr)
			_, errJ := gsw.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a"}, e.addr)
			_, errB := gsw.FetchJWTBundles(ctx, e.addr)
			for what, err := range map[string]error{"FetchX509SVID": errX, "FetchJWTSVID": errJ, "FetchJWTBundles": errB} {
				wantCode(t, what, err, tt.code)
				msg := status.Convert(err).Message()
				if !strings.Contains(msg, tt.says) || tt.withheld != "" && strings.Contains(msg, tt.withheld) {
					t.Fatalf("%s: message %q; want it to say %q and not %q", what, msg, tt.says, tt.withheld)
				}
			}
		})
	}
}

type failing struct{ err error }

func (f failing) Attest(context.Context, peercred.Info) ([]selector.Selector, error) {
	return nil, f.err
}
