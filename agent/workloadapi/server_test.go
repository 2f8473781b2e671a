package workloadapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/workloadapi"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// helperEnv makes the test binary a go-spiffe client (see TestMain): it
// runs the call named by the variable against SIGIL_WLAPI_SOCKET and
// prints a helperResult as JSON.
const helperEnv = "SIGIL_WLAPI_HELPER"

type helperResult struct {
	X509ID string `json:"x509_id,omitempty"`
	X509   string `json:"x509_code,omitempty"`
	JWT    string `json:"jwt_code,omitempty"` // asking for the root identity's JWT
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		runHelper(os.Getenv("SIGIL_WLAPI_SOCKET"))
		return
	}
	os.Exit(m.Run())
}

func runHelper(sock string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := gsw.WithAddr("unix://" + sock)
	var r helperResult
	svid, err := gsw.FetchX509SVID(ctx, addr)
	if err != nil {
		r.X509 = status.Code(err).String()
	} else {
		r.X509ID = svid.ID.String()
	}
	_, err = gsw.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a", Subject: spiffeid.RequireFromString("spiffe://example.org/root")}, addr)
	r.JWT = status.Code(err).String()
	_ = json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

type env struct {
	sock string
	addr gsw.ClientOption
	src  *workloadtest.Source
	ca   *testca.CA
	rec  *recorder
}

type recorder struct {
	mu    sync.Mutex
	calls map[string]int
}

func (r *recorder) ObserveCall(method string, code codes.Code) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[method+" "+code.String()]++
}

func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[key]
}

func sels(t testing.TB, ss ...string) []selector.Selector {
	t.Helper()
	out, err := selector.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// start serves the Workload API on a socket in a directory every user can
// reach, with the real unix attestor, and entries for uid 0 and 65534.
func start(t testing.TB) *env {
	t.Helper()
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return startWith(t, att)
}

// startWith is start with another attestor.
func startWith(t testing.TB, att workloadapi.Attestor) *env {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca := testca.New(t, td)
	src := workloadtest.New(t, ca)
	src.Put(workloadtest.Entry{ID: "e-root", Selectors: sels(t, "unix:uid:0"), SVID: ca.Issue(t, "spiffe://example.org/root")})
	src.Put(workloadtest.Entry{ID: "e-nobody", Selectors: sels(t, "unix:uid:65534"), SVID: ca.Issue(t, "spiffe://example.org/nobody")})
	rec := &recorder{calls: map[string]int{}}
	srv, err := workloadapi.New(workloadapi.Config{Source: src, Attestor: att, Metrics: rec})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(workloadapi.ServerOptions()...)
	srv.Register(g)
	sock := filepath.Join(dir, "agent.sock")
	ln, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(ln) }()
	t.Cleanup(func() {
		g.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &env{sock: sock, addr: gsw.WithAddr("unix://" + sock), src: src, ca: ca, rec: rec}
}

func wantCode(t testing.TB, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want code %s", what, err, code)
	}
}

func TestFetchX509SVID(t *testing.T) {
	e := start(t)
	other := testca.New(t, spiffeid.RequireTrustDomainFromString("other.org"))
	e.src.SetFederated(other.TrustDomain(), spiffeBundle(other))
	e.src.Put(workloadtest.Entry{ID: "e-root2", Selectors: sels(t, "unix:uid:0", "unix:user:root"),
		SVID: e.ca.Issue(t, "spiffe://example.org/root2"), FederatesWith: []spiffeid.TrustDomain{other.TrustDomain()}})
	// Needs a selector no process has: not ours.
	e.src.Put(workloadtest.Entry{ID: "e-z", Selectors: sels(t, "unix:uid:0", "unix:path:/nonexistent"), SVID: e.ca.Issue(t, "spiffe://example.org/z")})
	ctx := t.Context()

	svid, err := gsw.FetchX509SVID(ctx, e.addr)
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if svid.ID.String() != "spiffe://example.org/root" {
		t.Fatalf("default SVID %s, want the first entry's", svid.ID)
	}
	xc, err := gsw.FetchX509Context(ctx, e.addr)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range xc.SVIDs {
		ids = append(ids, s.ID.String())
		// The SVID verifies against the bundle it came with.
		if _, _, err := x509svid.Verify(s.Certificates, xc.Bundles); err != nil {
			t.Errorf("%s does not verify against the served bundles: %v", s.ID, err)
		}
	}
	if want := []string{"spiffe://example.org/root", "spiffe://example.org/root2"}; !slices.Equal(ids, want) {
		t.Fatalf("SVIDs %v, want %v", ids, want)
	}
	for _, d := range []spiffeid.TrustDomain{td, other.TrustDomain()} {
		b, ok := xc.Bundles.Get(d)
		if !ok || len(b.X509Authorities()) != 1 {
			t.Fatalf("no bundle for %s in %v", d, xc.Bundles.Bundles())
		}
	}
	bs, err := gsw.FetchX509Bundles(ctx, e.addr)
	if err != nil {
		t.Fatal(err)
	}
	if bs.Len() != 2 {
		t.Fatalf("FetchX509Bundles: %d bundles, want 2", bs.Len())
	}
	b, _ := bs.Get(td)
	if !b.Equal(x509bundle.FromX509Authorities(td, e.ca.Roots())) {
		t.Fatal("own bundle differs from the CA's roots")
	}
	// A stream's call is counted when the server sees the client leave.
	waitFor(t, "metrics count both FetchX509SVID calls", func() bool { return e.rec.count("FetchX509SVID OK") >= 2 })
}

func spiffeBundle(ca *testca.CA) *spiffebundle.Bundle {
	return spiffebundle.FromX509Authorities(ca.TrustDomain(), ca.Roots())
}

// x509Watcher forwards go-spiffe watcher callbacks to channels.
type x509Watcher struct {
	updates chan *gsw.X509Context
	errs    chan error
}

func newX509Watcher() *x509Watcher {
	return &x509Watcher{updates: make(chan *gsw.X509Context, 16), errs: make(chan error, 16)}
}
func (w *x509Watcher) OnX509ContextUpdate(c *gsw.X509Context) { w.updates <- c }
func (w *x509Watcher) OnX509ContextWatchError(err error) {
	if status.Code(err) != codes.Canceled {
		w.errs <- err
	}
}

const generous = 5 * time.Second

func (w *x509Watcher) next(t *testing.T, what string) *gsw.X509Context {
	t.Helper()
	select {
	case c := <-w.updates:
		return c
	case err := <-w.errs:
		t.Fatalf("%s: watch error %v", what, err)
	case <-time.After(generous):
		t.Fatalf("%s: no update within %s", what, generous)
	}
	return nil
}

// until reads updates until one satisfies cond.
func (w *x509Watcher) until(t *testing.T, what string, cond func(*gsw.X509Context) bool) {
	t.Helper()
	deadline := time.After(generous)
	for {
		select {
		case c := <-w.updates:
			if cond(c) {
				return
			}
		case err := <-w.errs:
			t.Fatalf("%s: watch error %v", what, err)
		case <-deadline:
			t.Fatalf("%s: no such update within %s", what, generous)
		}
	}
}

func serial(c *gsw.X509Context) string { return c.DefaultSVID().Certificates[0].SerialNumber.String() }

// Rotations, new entries, deletions and bundle changes reach an open
// go-spiffe watcher; when no identity remains the stream ends with
// PermissionDenied, the client keeps retrying, and an identity given back
// reaches it again.
func TestWatchX509Context(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	w := newX509Watcher()
	done := make(chan error, 1)
	go func() { done <- gsw.WatchX509Context(ctx, w, e.addr, gsw.WithBackoffStrategy(fastBackoff{})) }()
	defer func() {
		cancel()
		<-done
	}()

	first := w.next(t, "initial")
	if first.DefaultSVID().ID.String() != "spiffe://example.org/root" {
		t.Fatalf("initial %s", first.DefaultSVID().ID)
	}

	// Rotation.
	e.src.Put(workloadtest.Entry{ID: "e-root", Selectors: sels(t, "unix:uid:0"), SVID: e.ca.Issue(t, "spiffe://example.org/root")})
	rotated := w.next(t, "rotation")
	if serial(rotated) == serial(first) {
		t.Fatal("rotation: same serial")
	}

	// A new entry.
	e.src.Put(workloadtest.Entry{ID: "e-root3", Selectors: sels(t, "unix:uid:0"), SVID: e.ca.Issue(t, "spiffe://example.org/root3")})
	if c := w.next(t, "new entry"); len(c.SVIDs) != 2 {
		t.Fatalf("new entry: %d SVIDs", len(c.SVIDs))
	}

	// A federated bundle appears.
	other := testca.New(t, spiffeid.RequireTrustDomainFromString("other.org"))
	e.src.SetFederated(other.TrustDomain(), spiffeBundle(other))
	e.src.Put(workloadtest.Entry{ID: "e-root3", Selectors: sels(t, "unix:uid:0"), SVID: e.ca.Issue(t, "spiffe://example.org/root3"),
		FederatesWith: []spiffeid.TrustDomain{other.TrustDomain()}})
	w.until(t, "federation", func(c *gsw.X509Context) bool { return c.Bundles.Has(other.TrustDomain()) })

	// Deleting every entry ends the stream with PermissionDenied.
	e.src.Delete("e-root")
	if c := w.next(t, "delete one"); len(c.SVIDs) != 1 {
		t.Fatalf("delete one: %d SVIDs", len(c.SVIDs))
	}
	e.src.Delete("e-root3")
	select {
	case err := <-w.errs:
		wantCode(t, "after the last entry is deleted", err, codes.PermissionDenied)
	case c := <-w.updates:
		t.Fatalf("after the last entry is deleted: update with %d SVIDs, want PermissionDenied", len(c.SVIDs))
	case <-time.After(generous):
		t.Fatalf("no error within %s of the last entry's deletion", generous)
	}

	// The client retries; a new identity reaches it.
	e.src.Put(workloadtest.Entry{ID: "e-root", Selectors: sels(t, "unix:uid:0"), SVID: e.ca.Issue(t, "spiffe://example.org/root")})
	deadline := time.After(3 * generous)
	for {
		select {
		case c := <-w.updates:
			if c.DefaultSVID().ID.String() != "spiffe://example.org/root" {
				t.Fatalf("after re-adding: %s", c.DefaultSVID().ID)
			}
			return
		case err := <-w.errs:
			wantCode(t, "while waiting for the re-added entry", err, codes.PermissionDenied)
		case <-deadline:
			t.Fatal("re-added entry never reached the watcher")
		}
	}
}

// fastBackoff retries at once, so that tests do not wait for go-spiffe's
// default one-second steps.
type fastBackoff struct{}

func (fastBackoff) NewBackoff() gsw.Backoff { return fastBackoff{} }
func (fastBackoff) Next() time.Duration     { return 50 * time.Millisecond }
func (fastBackoff) Reset()                  {}

func TestX509Source(t *testing.T) {
	e := start(t)
	src, err := gsw.NewX509Source(t.Context(), gsw.WithClientOptions(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s1, err := src.GetX509SVID()
	if err != nil || s1.ID.String() != "spiffe://example.org/root" {
		t.Fatalf("GetX509SVID = %v, %v", s1, err)
	}
	e.src.Put(workloadtest.Entry{ID: "e-root", Selectors: sels(t, "unix:uid:0"), SVID: e.ca.Issue(t, "spiffe://example.org/root")})
	deadline := time.Now().Add(generous)
	for {
		s2, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if s2.Certificates[0].SerialNumber.Cmp(s1.Certificates[0].SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("X509Source did not see the rotation within %s", generous)
		}
		select {
		case <-src.Updated():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := src.GetX509BundleForTrustDomain(td); err != nil {
		t.Fatal(err)
	}
	src.Close()
	// Closed streams release their subscriptions.
	waitFor(t, "subscriptions released", func() bool { return e.src.Subscribers() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(generous)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, generous)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJWT(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	js, err := gsw.NewJWTSource(ctx, gsw.WithClientOptions(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer js.Close()
	root := spiffeid.RequireFromString("spiffe://example.org/root")
	sv, err := js.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "svc-a", ExtraAudiences: []string{"svc-b"}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if sv.ID != root {
		t.Fatalf("JWT-SVID for %s", sv.ID)
	}
	// The source's bundles validate it locally...
	if _, err := jwtsvid.ParseAndValidate(sv.Marshal(), js, []string{"svc-b"}); err != nil {
		t.Fatalf("local validation: %v", err)
	}
	// ...and so does the agent.
	got, err := gsw.ValidateJWTSVID(ctx, sv.Marshal(), "svc-a", e.addr)
	if err != nil || got.ID != root {
		t.Fatalf("ValidateJWTSVID = %v, %v", got, err)
	}
	c, err := gsw.New(ctx, e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wl := workloadpb.NewSpiffeWorkloadAPIClient(rawConn(t, e.sock))
	hdr := metadata.AppendToOutgoingContext(ctx, workloadapi.Header, "true")
	resp, err := wl.ValidateJWTSVID(hdr, &workloadpb.ValidateJWTSVIDRequest{Audience: "svc-a", Svid: sv.Marshal()})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SpiffeId != root.String() || resp.Claims.Fields["sub"].GetStringValue() != root.String() {
		t.Fatalf("ValidateJWTSVID response %v", resp)
	}

	bundles, err := gsw.FetchJWTBundles(ctx, e.addr)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := bundles.GetJWTBundleForTrustDomain(td)
	if err != nil || !jb.HasJWTAuthority("kid-1") {
		t.Fatalf("JWT bundle = %v, %v", jb, err)
	}

	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"validate wrong audience", func() error { _, err := c.ValidateJWTSVID(ctx, sv.Marshal(), "svc-x"); return err }, codes.InvalidArgument},
		{"validate garbage", func() error { _, err := c.ValidateJWTSVID(ctx, "not.a.jwt", "svc-a"); return err }, codes.InvalidArgument},
		{"validate no audience", func() error { _, err := c.ValidateJWTSVID(ctx, sv.Marshal(), ""); return err }, codes.InvalidArgument},
		{"validate token from an untrusted key", func() error {
			_, err := c.ValidateJWTSVID(ctx, foreignToken(t), "svc-a")
			return err
		}, codes.InvalidArgument},
		{"fetch for an ID the caller does not hold", func() error {
			_, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a", Subject: spiffeid.RequireFromString("spiffe://example.org/nobody")})
			return err
		}, codes.PermissionDenied},
		{"fetch without audience", func() error {
			_, err := wl.FetchJWTSVID(hdr, &workloadpb.JWTSVIDRequest{})
			return err
		}, codes.InvalidArgument},
		{"fetch with an empty audience", func() error {
			_, err := wl.FetchJWTSVID(hdr, &workloadpb.JWTSVIDRequest{Audience: []string{"a", ""}})
			return err
		}, codes.InvalidArgument},
		{"fetch with a bad SPIFFE ID", func() error {
			_, err := wl.FetchJWTSVID(hdr, &workloadpb.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: "http://example.org/x"})
			return err
		}, codes.InvalidArgument},
		{"fetch for a named ID the caller holds", func() error {
			r, err := wl.FetchJWTSVID(hdr, &workloadpb.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: root.String()})
			if err == nil && (len(r.Svids) != 1 || r.Svids[0].SpiffeId != root.String()) {
				return fmt.Errorf("response %v", r)
			}
			return err
		}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.name, tc.call(), tc.code) })
	}
}

// foreignToken is a JWT-SVID signed by a key the bundle does not hold.
func foreignToken(t *testing.T) string {
	t.Helper()
	other := workloadtest.New(t, testca.New(t, td))
	toks, err := other.FetchJWTSVID(t.Context(), selector.NewSet(), spiffeid.ID{}, []string{"svc-a"})
	if err == nil {
		t.Fatalf("empty source minted %v", toks)
	}
	ca := testca.New(t, td)
	other = workloadtest.New(t, ca)
	other.Put(workloadtest.Entry{ID: "x", Selectors: sels(t, "unix:uid:0"), SVID: ca.Issue(t, "spiffe://example.org/root")})
	toks, err = other.FetchJWTSVID(t.Context(), selector.NewSet(sels(t, "unix:uid:0")...), spiffeid.ID{}, []string{"svc-a"})
	if err != nil {
		t.Fatal(err)
	}
	return toks[0].Token
}

func rawConn(t testing.TB, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Every method needs the security header, before anything else happens.
func TestMissingHeader(t *testing.T) {
	e := start(t)
	wl := workloadpb.NewSpiffeWorkloadAPIClient(rawConn(t, e.sock))
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		md   []string
	}{
		{"no header", nil},
		{"false", []string{workloadapi.Header, "false"}},
		{"twice", []string{workloadapi.Header, "true", workloadapi.Header, "true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctx
			if tc.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tc.md...)
			}
			calls := map[string]func() error{
				"FetchX509SVID": func() error {
					s, err := wl.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
				"FetchX509Bundles": func() error {
					s, err := wl.FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
				"FetchJWTBundles": func() error {
					s, err := wl.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
				"FetchJWTSVID": func() error {
					_, err := wl.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"a"}})
					return err
				},
				"ValidateJWTSVID": func() error {
					_, err := wl.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
					return err
				},
			}
			for name, call := range calls {
				wantCode(t, name, call(), codes.InvalidArgument)
			}
		})
	}
	if n := e.src.JWTMints(); n != 0 {
		t.Fatalf("%d JWT-SVIDs minted for callers without the header", n)
	}
}

// A caller whose selectors match no entry gets PermissionDenied from every
// method, through go-spiffe's client.
func TestNoIdentity(t *testing.T) {
	e := start(t)
	e.src.Delete("e-root")
	ctx := t.Context()
	_, err := gsw.FetchX509SVID(ctx, e.addr)
	wantCode(t, "FetchX509SVID", err, codes.PermissionDenied)
	_, err = gsw.FetchX509Bundles(ctx, e.addr)
	wantCode(t, "FetchX509Bundles", err, codes.PermissionDenied)
	_, err = gsw.FetchJWTBundles(ctx, e.addr)
	wantCode(t, "FetchJWTBundles", err, codes.PermissionDenied)
	_, err = gsw.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a"}, e.addr)
	wantCode(t, "FetchJWTSVID", err, codes.PermissionDenied)
	_, err = gsw.ValidateJWTSVID(ctx, "a.b.c", "a", e.addr)
	wantCode(t, "ValidateJWTSVID", err, codes.PermissionDenied)
	if !strings.Contains(status.Convert(err).Message(), "no identity issued") {
		t.Fatalf("message %q", status.Convert(err).Message())
	}
}

// Callers running as other uids get their own identity and never another
// uid's: the test binary, copied where every user can run it, is the
// go-spiffe client, run through setpriv.
func TestOtherUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs clients as other uids with setpriv and must run as root (hack/test.sh does, in CI)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv not found: install util-linux (apt-get install util-linux)")
	}
	e := start(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(filepath.Dir(e.sock), "client.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		argv []string
		want helperResult
	}{
		{"root", []string{exe}, helperResult{X509ID: "spiffe://example.org/root", JWT: "OK"}},
		{"nobody", []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", exe},
			helperResult{X509ID: "spiffe://example.org/nobody", JWT: "PermissionDenied"}},
		{"uid without entry", []string{setpriv, "--reuid=65533", "--regid=65533", "--clear-groups", exe},
			helperResult{X509: "PermissionDenied", JWT: "PermissionDenied"}},
		{"root group, other uid", []string{setpriv, "--reuid=65533", "--regid=0", "--groups=0", exe},
			helperResult{X509: "PermissionDenied", JWT: "PermissionDenied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Env = append(os.Environ(), helperEnv+"=1", "SIGIL_WLAPI_SOCKET="+e.sock)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %v", tc.argv, err)
			}
			var got helperResult
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("helper output %q: %v", out, err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	att, _ := unix.New(unix.Config{})
	src := workloadtest.New(t, testca.New(t, td))
	for _, cfg := range []workloadapi.Config{{Attestor: att}, {Source: src}} {
		if _, err := workloadapi.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "a.sock")
	ln, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	if _, err := workloadapi.Listen(sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Listen on a live socket = %v", err)
	}
	// A stale socket (nobody serving) is replaced.
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	ln.Close()
	ln, err = workloadapi.Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", file, filepath.Join(dir, "nodir", "a.sock")} {
		if _, err := workloadapi.Listen(p); err == nil {
			t.Errorf("Listen(%q) succeeded", p)
		}
	}
}

// BenchmarkFetchX509SVID measures one FetchX509SVID over the socket with
// go-spiffe's client (attestation with a cached digest, marshalling, one
// stream), reporting p50 and p99.
func BenchmarkFetchX509SVID(b *testing.B) {
	e := start(b)
	c, err := gsw.New(b.Context(), e.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if _, err := c.FetchX509SVID(b.Context()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

var _ workloadapi.Attestor = (*unix.Attestor)(nil)
