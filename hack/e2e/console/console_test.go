package console

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread"
	"github.com/sigilhq/sigil/authz/decisionread/decisionreadtest"
	"github.com/sigilhq/sigil/authz/explain"
	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/internal/adminclient"
	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/policies"
)

var sigil *e2e.Binary

func TestMain(m *testing.M) {
	e2e.Main(m, "console", func(b *e2e.Binary, _ string) error { sigil = b; return nil })
}

const (
	td         = "spiffe://example.org"
	parent     = td + "/sigil/agent/join_token/console-test"
	frontend   = td + "/ns/shop/sa/frontend"
	cart       = td + "/ns/shop/sa/cart"
	prometheus = td + "/ns/monitoring/sa/prometheus"
)

// chromium finds Debian's chromium or fails saying how to install it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: this test drives a real headless browser; install it with `bash hack/setup/70-chromium.sh` (as root on Debian: apt-get install -y chromium)")
	return ""
}

// seedPolicy writes the policy library and the shop example as
// `sigil dev` seeds them.
func seedPolicy(t *testing.T, dir string) {
	t.Helper()
	for _, root := range []string{"lib", "examples/shop"} {
		err := fs.WalkDir(policies.FS(), root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || policysrc.IsTestFile(p) || strings.HasSuffix(p, ".md") {
				return err
			}
			raw, err := fs.ReadFile(policies.FS(), p)
			if err != nil {
				return err
			}
			to := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p, "examples/shop/")))
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			return os.WriteFile(to, raw, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

type call struct {
	src, dst, method, path, result, reason string
}

var calls = []call{
	{frontend, cart, "GET", "/items/7", "allow", "allowed"},
	{frontend, cart, "DELETE", "/items/7", "deny", "denied"},
	{cart, frontend, "GET", "/items", "deny", "denied"},
	{prometheus, cart, "GET", "/metrics", "allow", "allowed"},
	{frontend, cart, "POST", "/orders", "allow", "allowed"},
}

func TestConsoleInChromium(t *testing.T) {
	browser := chromium(t)
	dir := t.TempDir()

	// 1. A real CA with the console on an HTTPS address.
	caDir := filepath.Join(dir, "ca")
	sock := filepath.Join(caDir, "admin.sock")
	consoleAddr := e2e.FreeAddr(t)
	cfg := filepath.Join(dir, "ca.yaml")
	e2e.WriteFile(t, cfg, fmt.Sprintf("trust_domain: example.org\ndata_dir: %s\nserver_address: 127.0.0.1:0\nconsole_address: %s\n", caDir, consoleAddr), 0o600)
	ca := sigil.Start(t, "ca", "run", "--config", cfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ca.Exited() {
			t.Fatalf("sigil ca run exited:\n%s", ca.Output())
		}
		if _, _, err := sigil.Run(t, "ca", "status", "--admin-socket", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sigil ca run never answered on %s:\n%s", sock, ca.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 2. Entries, made with the CLI.
	for _, id := range []string{frontend, cart, prometheus} {
		sigil.MustRun(t, "entry", "create", "--admin-socket", sock, "--spiffe-id", id, "--parent-id", parent, "--selector", "unix:uid:"+strconv.Itoa(1000+len(id)))
	}

	// 3. The serving policy and a decision log as authz writes it.
	policyDir := filepath.Join(dir, "policies")
	seedPolicy(t, policyDir)
	logPath := filepath.Join(dir, "decisions.log")
	decisionreadtest.WriteLog(t, logPath, len(calls), func(i int) decisionreadtest.Decision {
		c := calls[i]
		return decisionreadtest.Decision{
			Entry: decisionlog.Entry{
				DecisionID: fmt.Sprintf("dec-%d", i), Time: time.Now().UTC(), Source: c.src, Destination: c.dst,
				Method: c.method, Path: c.path, Result: c.result, Reason: c.reason,
			},
			Request: explain.Request(c.src, c.dst, c.method, c.path, nil),
		}
	})

	// 4. sigil console on a local port.
	con := sigil.Start(t, "console", "--admin-socket", sock, "--listen", "127.0.0.1:0", "--policy", policyDir, "--decision-log", logPath)
	con.WaitForOutput(t, "console: http://", 30*time.Second)
	m := regexp.MustCompile(`console: (http://\S+)/`).FindStringSubmatch(con.Output())
	if m == nil {
		t.Fatalf("no URL in:\n%s", con.Output())
	}
	base := m[1]

	// What the admin API says, to hold the pages against.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, conn, err := adminclient.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	entries, err := admin.ListEntries(ctx, &adminv1.ListEntriesRequest{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	status, err := admin.CAStatus(ctx, &adminv1.CAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := admin.GetBundle(ctx, &adminv1.GetBundleRequest{TrustDomain: status.GetTrustDomain()})
	if err != nil {
		t.Fatal(err)
	}
	agents, err := admin.ListAgents(ctx, &adminv1.ListAgentsRequest{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}

	// 5. A real headless Chromium loads each page.
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), chromedp.ExecPath(browser), chromedp.Flag("disable-gpu", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses root
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	texts := func(sel string) []string {
		t.Helper()
		js := `Array.from(document.querySelectorAll(` + strconv.Quote(sel) + `)).map(e => e.textContent.trim())`
		out, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](js))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return out
	}
	visit := func(path string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Navigate(base+path), chromedp.WaitReady(chromedp.CSS("body"))); err != nil {
			t.Fatalf("load %s: %v", path, err)
		}
		if errs := texts("#error"); len(errs) > 0 {
			t.Fatalf("%s shows an error: %s", path, errs[0])
		}
	}
	one := func(sel string) string {
		t.Helper()
		got := texts(sel)
		if len(got) != 1 {
			t.Fatalf("%d elements match %s, want 1: %q", len(got), sel, got)
		}
		return got[0]
	}

	t.Run("overview", func(t *testing.T) {
		visit("/")
		if got := one("#trust-domain"); got != status.GetTrustDomain() {
			t.Errorf("trust domain %q, API says %q", got, status.GetTrustDomain())
		}
	})
	t.Run("entries", func(t *testing.T) {
		visit("/entries")
		if got, want := one("#entry-count"), strconv.Itoa(len(entries.GetEntries())); got != want {
			t.Errorf("entry count %s, API says %s", got, want)
		}
		var want []string
		for _, e := range entries.GetEntries() {
			want = append(want, e.GetSpiffeId())
		}
		if got := texts(".spiffe-id"); !sameSet(got, want) {
			t.Errorf("entries page shows %q, API lists %q", got, want)
		}
		visit("/entries?limit=2")
		if got := texts(".spiffe-id"); len(got) != 2 || len(texts("#next")) != 1 {
			t.Errorf("a page of 2 shows %q and next link %q", got, texts("#next"))
		}
	})
	t.Run("agents", func(t *testing.T) {
		visit("/agents")
		if got, want := one("#agent-count"), strconv.Itoa(len(agents.GetAgents())); got != want {
			t.Errorf("agent count %s, API says %s", got, want)
		}
	})
	t.Run("ca", func(t *testing.T) {
		visit("/ca")
		var wantIDs, wantStates []string
		for _, k := range status.GetKeys() {
			wantIDs, wantStates = append(wantIDs, k.GetId()), append(wantStates, k.GetState())
		}
		if got := texts(".key-id"); !slices.Equal(got, wantIDs) {
			t.Errorf("key ids %q, API says %q", got, wantIDs)
		}
		if got := texts("#keys .state"); !slices.Equal(got, wantStates) {
			t.Errorf("key states %q, API says %q", got, wantStates)
		}
		if got, want := len(texts(".fingerprint")), len(bundle.GetBundle().GetX509Authorities()); got != want || want == 0 {
			t.Errorf("%d X.509 authorities shown, bundle has %d", got, want)
		}
		if got, want := one("#bundle-sequence"), strconv.FormatUint(bundle.GetBundle().GetSequence(), 10); got != want {
			t.Errorf("bundle sequence %s, API says %s", got, want)
		}
	})
	t.Run("decisions", func(t *testing.T) {
		visit("/decisions")
		if got := one("#decision-count"); got != strconv.Itoa(len(calls)) {
			t.Errorf("decision count %s, want %d", got, len(calls))
		}
		// Filter with the form, as a person would.
		if err := chromedp.Do(bctx,
			chromedp.SetValue(chromedp.CSS(`select[name="result"]`), "deny"),
			chromedp.SetValue(chromedp.CSS(`input[name="source"]`), "sa/frontend"),
			chromedp.Click(chromedp.CSS("#filter")),
		); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(locationOf(t, bctx), "result=deny") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if err := chromedp.Do(bctx, chromedp.WaitReady(chromedp.CSS("#decisions"))); err != nil {
			t.Fatal(err)
		}
		if got := texts(".result"); !slices.Equal(got, []string{"deny"}) {
			t.Errorf("filtered results %q, want one deny", got)
		}
		if got := texts(".source"); !slices.Equal(got, []string{frontend}) {
			t.Errorf("filtered sources %q, want %s", got, frontend)
		}
	})
	t.Run("decision detail", func(t *testing.T) {
		want, err := decisionread.ByID(logPath, "dec-1", 0) // frontend DELETE /items/7
		if err != nil {
			t.Fatal(err)
		}
		visit("/decisions/" + strconv.FormatUint(want.Seq, 10))
		if got := one("#reason"); got != want.Reason {
			t.Errorf("reason %q, the log says %q", got, want.Reason)
		}
		if got := one("#decision-id"); got != want.DecisionID {
			t.Errorf("decision id %q, want %q", got, want.DecisionID)
		}
		if got := one("#explain-result"); got != "deny" {
			t.Errorf("explanation result %q, want deny", got)
		}
		if got := texts("#decided-by .rule-text"); !slices.Equal(got, []string{"default allow := false"}) {
			t.Errorf("decided by %q, want the default rule", got)
		}
		if got := texts("#closest .expr"); len(got) == 0 || got[0] != "method in edge.methods" {
			t.Errorf("closest miss %q, want method in edge.methods", got)
		}
	})
	t.Run("graph", func(t *testing.T) {
		visit("/graph")
		src, dst := texts("#observed .source"), texts("#observed .destination")
		allowed, denied := texts("#observed .allowed"), texts("#observed .denied")
		got := map[string]string{}
		for i := range src {
			got[src[i]+" -> "+dst[i]] = allowed[i] + "/" + denied[i]
		}
		want := map[string]string{frontend + " -> " + cart: "2/1", cart + " -> " + frontend: "0/1", prometheus + " -> " + cart: "1/0"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("observed edges %v, want %v", got, want)
		}
		if n := len(texts("#policy-edges .from")); n != 4 {
			t.Errorf("%d policy edges shown, shop's data.json has 4", n)
		}
	})

	// 6. The CA's own console refuses a client without an admin SVID.
	t.Run("ca console needs an admin svid", func(t *testing.T) {
		// Only the refusal is checked here, not the CA's certificate.
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		var resp *http.Response
		for deadline := time.Now().Add(10 * time.Second); ; {
			if resp, err = hc.Get("https://" + consoleAddr + "/entries"); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("ca console: %v\n%s", err, ca.Output())
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "admin X509-SVID") {
			t.Fatalf("without a client certificate: %d %s", resp.StatusCode, body)
		}
	})

	// 7. Teardown: Ctrl-C stops both cleanly (the cleanup kills them otherwise).
	if _, err := con.Interrupt(t, 10*time.Second); err != nil {
		t.Errorf("sigil console did not stop cleanly: %v\n%s", err, con.Output())
	}
	if _, err := ca.Interrupt(t, 10*time.Second); err != nil {
		t.Errorf("sigil ca run did not stop cleanly: %v\n%s", err, ca.Output())
	}
}

func locationOf(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
