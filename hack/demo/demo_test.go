// Package demo drives the two-service demo of issue 6 end to end and
// asserts its outcomes; see README.md. Run it with hack/demo/run.sh to
// watch the narrative.
package demo

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/hack/demo/internal/meshdemo"
	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/policies"
)

// The demo's workloads: one uid each.
const (
	uidBackend  = 64201
	uidFrontend = 64202
	uidCaller   = 64203
)

const (
	idBackend  = "spiffe://example.org/ns/demo/sa/backend"
	idFrontend = "spiffe://example.org/ns/demo/sa/frontend"
	idCaller   = "spiffe://example.org/ns/demo/sa/caller"
)

// The example policy the demo enforces.
const policyExample = "examples/demo"

// rate is how many calls a second the frontend's loop makes.
const rate = 50

var bins struct {
	sigil                     *e2e.Binary
	frontend, backend, caller string
}

func TestMain(m *testing.M) {
	e2e.Main(m, "demo", func(sigil *e2e.Binary, dir string) error {
		bins.sigil = sigil
		for _, b := range []struct {
			dst  *string
			name string
		}{{&bins.frontend, "frontend"}, {&bins.backend, "backend"}, {&bins.caller, "caller"}} {
			var err error
			if *b.dst, err = e2e.BuildPackage(dir, "./hack/demo/"+b.name, b.name); err != nil {
				return err
			}
		}
		return nil
	})
}

// say prints one line of the demo's narrative.
func say(format string, args ...any) {
	fmt.Printf("demo | "+format+"\n", args...)
}

func step(n int, title string) {
	fmt.Printf("\ndemo | ---- %d. %s\n", n, title)
}

// seedPolicies writes the Rego library and the demo example (without
// their tests) into dir, so that `sigil dev` enforces the demo policy from
// its first start instead of seeding the shop example.
func seedPolicies(t *testing.T, dir string) {
	t.Helper()
	pfs := policies.FS()
	copyTree := func(root, to string) {
		err := fs.WalkDir(pfs, root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
			target := filepath.Join(to, filepath.FromSlash(rel))
			if d.IsDir() {
				return os.MkdirAll(target, 0o755)
			}
			if strings.HasSuffix(p, "_test.rego") || !(path.Ext(p) == ".rego" || path.Base(p) == "data.json") {
				return nil
			}
			b, err := fs.ReadFile(pfs, p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		})
		if err != nil {
			t.Fatalf("seed %s: %v", root, err)
		}
	}
	copyTree("lib", filepath.Join(dir, "lib"))
	copyTree(policyExample, dir)
}

// getJSON GETs a plain HTTP URL and decodes its JSON body into v.
func getJSON(u string, v any) error {
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type frontendStatus struct {
	Requests      int64         `json:"requests"`
	OK            int64         `json:"ok"`
	Failed        int64         `json:"failed"`
	LastFailure   string        `json:"last_failure"`
	BackendSigner string        `json:"backend_signer"`
	SVID          meshdemo.SVID `json:"svid"`
}

type backendStatus struct {
	Allowed int64             `json:"allowed"`
	Denied  int64             `json:"denied"`
	Failed  int64             `json:"failed"`
	Callers map[string]string `json:"callers"`
	SVID    meshdemo.SVID     `json:"svid"`
}

// waitFor polls cond every 100 ms until it holds or timeout passes; procs
// that exit meanwhile fail the test with their output.
func waitFor(t *testing.T, what string, timeout time.Duration, procs []*e2e.Proc, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if detail != "" {
			last = detail
		}
		for _, p := range procs {
			if p.Exited() {
				t.Fatalf("waiting for %s: a process exited:\n%s", what, p.Output())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type caKey struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	State   string `json:"state"`
	Tainted bool   `json:"tainted"`
}

// x509Keys lists the CA's x509 signing keys from `sigil ca status -o json`.
func x509Keys(t *testing.T, adminSock string) []caKey {
	t.Helper()
	out := bins.sigil.MustRun(t, "ca", "status", "-o", "json", "--admin-socket", adminSock)
	var st struct {
		Keys []caKey `json:"keys"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ca status -o json printed %q: %v", out, err)
	}
	var keys []caKey
	for _, k := range st.Keys {
		if k.Kind == "x509" {
			keys = append(keys, k)
		}
	}
	return keys
}

func activeX509Key(t *testing.T, adminSock string) string {
	t.Helper()
	for _, k := range x509Keys(t, adminSock) {
		if k.State == "active" {
			return k.ID
		}
	}
	t.Fatalf("sigil ca status shows no active x509 key: %+v", x509Keys(t, adminSock))
	return ""
}

type decision struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Result      string `json:"result"`
	Reason      string `json:"reason"`
	DecisionID  string `json:"decision_id"`
}

func readDecisions(t *testing.T, file string) []decision {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("decision log: %v", err)
	}
	var out []decision
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var d decision
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			continue // a line being written right now
		}
		out = append(out, d)
	}
	return out
}

func TestDemo(t *testing.T) {
	setpriv := e2e.Setpriv(t)
	start := time.Now()

	step(1, "the policy")
	say("policies/examples/demo allows %s to GET /api/... on %s; everything else is denied.", idFrontend, idBackend)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := bins.sigil.MustRun(t, "policy", "test", filepath.Join(root, "policies/lib"), filepath.Join(root, "policies", policyExample))
	say("sigil policy test policies/lib policies/examples/demo: %s", strings.TrimSpace(out))

	step(2, "start Sigil (CA, agent, authz) with `sigil dev`")
	dir, err := os.MkdirTemp("", "sigil-demo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seedPolicies(t, filepath.Join(dir, "policies"))
	authzAddr := e2e.FreeAddr(t)
	dev := bins.sigil.Start(t, "dev", "--dir", dir, "--server-address", e2e.FreeAddr(t), "--health-address", e2e.FreeAddr(t), "--authz-address", authzAddr)
	dev.WaitForOutput(t, "Sigil dev is running", 60*time.Second)
	adminSock, agentSock, logFile := filepath.Join(dir, "admin.sock"), filepath.Join(dir, "agent.sock"), filepath.Join(dir, "decisions.log")
	e2e.WaitForSocket(t, dev, agentSock, 30*time.Second)
	say("sigil dev --dir %s: admin socket %s, agent socket %s, authz on %s", dir, adminSock, agentSock, authzAddr)

	step(3, "register three workloads, one uid each")
	for _, e := range []struct {
		id  string
		uid int
	}{{idBackend, uidBackend}, {idFrontend, uidFrontend}, {idCaller, uidCaller}} {
		bins.sigil.MustRun(t, "entry", "create", "--admin-socket", adminSock, "--spiffe-id", e.id, "--selector", fmt.Sprintf("unix:uid:%d", e.uid))
		say("sigil entry create --spiffe-id %s --selector unix:uid:%d", e.id, e.uid)
	}

	step(4, "start backend and frontend (each gets its SVID from the agent with go-spiffe)")
	backendAddr, backendStatusAddr, frontendStatusAddr := e2e.FreeAddr(t), e2e.FreeAddr(t), e2e.FreeAddr(t)
	backend := e2e.AsUID(setpriv, bins.backend, uidBackend).Start(t,
		"-socket", agentSock, "-listen", backendAddr, "-authz", authzAddr, "-status", backendStatusAddr)
	procs := []*e2e.Proc{dev, backend}
	var bs backendStatus
	var fs frontendStatus
	readBackend := func() (bool, string) {
		bs = backendStatus{}
		if err := getJSON("http://"+backendStatusAddr+"/status", &bs); err != nil {
			return false, err.Error()
		}
		return true, ""
	}
	readFrontend := func() (bool, string) {
		fs = frontendStatus{}
		if err := getJSON("http://"+frontendStatusAddr+"/status", &fs); err != nil {
			return false, err.Error()
		}
		return true, ""
	}
	// The backend serves its status only once its mTLS listener is up, so
	// the frontend's first call finds it listening.
	waitFor(t, "backend up", 60*time.Second, procs, readBackend)
	frontend := e2e.AsUID(setpriv, bins.frontend, uidFrontend).Start(t,
		"-socket", agentSock, "-backend", backendAddr, "-backend-id", idBackend, "-rate", strconv.Itoa(rate), "-status", frontendStatusAddr)
	procs = append(procs, frontend)
	waitFor(t, "frontend calling", 60*time.Second, procs, func() (bool, string) {
		if ok, d := readFrontend(); !ok {
			return false, d
		}
		return fs.OK >= 5, fmt.Sprintf("%+v", fs)
	})
	if fs.SVID.ID != idFrontend || bs.SVID.ID != idBackend {
		t.Fatalf("frontend holds %q and backend %q, want %s and %s", fs.SVID.ID, bs.SVID.ID, idFrontend, idBackend)
	}
	say("backend  (uid %d) holds %s", uidBackend, bs.SVID.ID)
	say("frontend (uid %d) holds %s and calls GET /api/items %d times a second: %d ok, %d failed so far", uidFrontend, fs.SVID.ID, rate, fs.OK, fs.Failed)

	step(5, "allowed and denied calls")
	call := func(method, p string) meshdemo.Result {
		t.Helper()
		var r meshdemo.Result
		if err := getJSON("http://"+frontendStatusAddr+"/call?"+url.Values{"method": {method}, "path": {p}}.Encode(), &r); err != nil {
			t.Fatalf("frontend call %s %s: %v", method, p, err)
		}
		return r
	}
	allowed := call("GET", "/api/items")
	say("frontend GET  /api/items -> %d %s", allowed.Status, allowed.Body+allowed.Error)
	if allowed.Status != http.StatusOK || !strings.Contains(allowed.Body, `"caller":"`+idFrontend+`"`) {
		t.Errorf("frontend GET /api/items = %+v, want 200 naming the frontend as caller", allowed)
	}
	admin := call("GET", "/admin")
	say("frontend GET  /admin     -> %d %s", admin.Status, admin.Body+admin.Error)
	if admin.Status != http.StatusForbidden || !strings.Contains(admin.Body, "no edge lets "+idFrontend+" GET /admin") {
		t.Errorf("frontend GET /admin = %+v, want 403 with the policy's reason", admin)
	}
	post := call("POST", "/api/items")
	say("frontend POST /api/items -> %d %s", post.Status, post.Body+post.Error)
	if post.Status != http.StatusForbidden {
		t.Errorf("frontend POST /api/items = %+v, want 403", post)
	}
	callerOut, callerErr, err := e2e.AsUID(setpriv, bins.caller, uidCaller).Run(t,
		"-socket", agentSock, "-backend", backendAddr, "-backend-id", idBackend, "-method", "GET", "-path", "/api/items")
	if err != nil {
		t.Fatalf("caller: %v\n%s%s", err, callerOut, callerErr)
	}
	var cr struct {
		Self meshdemo.SVID `json:"self"`
		meshdemo.Result
	}
	if err := json.Unmarshal([]byte(callerOut), &cr); err != nil {
		t.Fatalf("caller printed %q: %v", callerOut, err)
	}
	say("caller (uid %d, %s) GET /api/items -> %d %s", uidCaller, cr.Self.ID, cr.Status, cr.Body+cr.Error)
	if cr.Self.ID != idCaller || cr.Status != http.StatusForbidden || !strings.Contains(cr.Body, "no edge lets "+idCaller) {
		t.Errorf("caller = %+v, want %s denied with 403", cr, idCaller)
	}

	step(6, "the decision log shows each decision")
	type want struct{ source, method, path, result string }
	wants := []want{
		{idFrontend, "GET", "/api/items", "allow"},
		{idFrontend, "GET", "/admin", "deny"},
		{idFrontend, "POST", "/api/items", "deny"},
		{idCaller, "GET", "/api/items", "deny"},
	}
	found := make([]*decision, len(wants))
	waitFor(t, "decisions in "+logFile, 30*time.Second, procs, func() (bool, string) {
		ds := readDecisions(t, logFile)
		missing := 0
		for i, w := range wants {
			for j := range ds {
				d := &ds[j]
				if d.Source == w.source && d.Destination == idBackend && d.Method == w.method && d.Path == w.path && d.Result == w.result {
					found[i] = d
					break
				}
			}
			if found[i] == nil {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d decisions missing among %d lines", missing, len(wants), len(ds))
	})
	for _, d := range found {
		say("%-20s %-5s %s -> %s %s %s (%s)", d.DecisionID, d.Result, d.Source, d.Destination, d.Method, d.Path, d.Reason)
	}

	step(7, "live CA rotation while the frontend keeps calling")
	oldKey := activeX509Key(t, adminSock)
	// A second of calls on the old certificates first.
	target := fs.Requests + rate
	waitFor(t, "both services on the active key", 60*time.Second, procs, func() (bool, string) {
		readFrontend()
		readBackend()
		return fs.SVID.Signer == oldKey && bs.SVID.Signer == oldKey && fs.Requests >= target,
			fmt.Sprintf("frontend signer %s, backend signer %s, active %s, %d calls (want %d)", fs.SVID.Signer, bs.SVID.Signer, oldKey, fs.Requests, target)
	})
	before := fs
	say("active x509 key %s signed both SVIDs; frontend so far: %d calls, %d failed", meshdemo.Short(oldKey), before.Requests, before.Failed)
	bins.sigil.MustRun(t, "ca", "prepare", "--admin-socket", adminSock)
	var newKey string
	for _, k := range x509Keys(t, adminSock) {
		if k.State == "prepared" {
			newKey = k.ID
		}
	}
	if newKey == "" {
		t.Fatalf("no prepared x509 key after sigil ca prepare: %+v", x509Keys(t, adminSock))
	}
	say("sigil ca prepare            -> key %s prepared", meshdemo.Short(newKey))
	bins.sigil.MustRun(t, "ca", "activate", "--admin-socket", adminSock)
	if got := activeX509Key(t, adminSock); got != newKey {
		t.Fatalf("active key after sigil ca activate = %s, want %s", got, newKey)
	}
	say("sigil ca activate           -> key %s signs new SVIDs", meshdemo.Short(newKey))
	rotationStart := time.Now()
	bins.sigil.MustRun(t, "ca", "taint", oldKey, "--admin-socket", adminSock)
	say("sigil ca taint %s -> the agent re-issues every SVID it signed", meshdemo.Short(oldKey))
	waitFor(t, "both services on the new key", 60*time.Second, procs, func() (bool, string) {
		readFrontend()
		readBackend()
		return fs.SVID.Signer == newKey && bs.SVID.Signer == newKey &&
				fs.BackendSigner == newKey && bs.Callers[idFrontend] == newKey,
			fmt.Sprintf("frontend holds %s and sees backend %s; backend holds %s and sees frontend %s; new %s",
				fs.SVID.Signer, fs.BackendSigner, bs.SVID.Signer, bs.Callers[idFrontend], newKey)
	})
	rotation := time.Since(rotationStart)
	say("both services hold SVIDs signed by %s and see each other's new certificates %s after the taint",
		meshdemo.Short(newKey), rotation.Round(time.Millisecond))
	// Keep calling for about two seconds on the new certificates, then
	// stop the loop.
	target = fs.Requests + 2*rate
	waitFor(t, "calls on the new certificates", 60*time.Second, procs, func() (bool, string) {
		readFrontend()
		return fs.Requests >= target, fmt.Sprintf("%d calls, want %d", fs.Requests, target)
	})
	if _, err := frontend.Interrupt(t, 15*time.Second); err != nil {
		t.Errorf("frontend exited with %v:\n%s", err, frontend.Output())
	}
	say("what the services saw (their own output):")
	for _, p := range []*e2e.Proc{backend, frontend} {
		for _, line := range strings.Split(p.Output(), "\n") {
			if strings.Contains(line, "signed by") {
				say("    %s", line)
			}
		}
	}
	var final frontendStatus
	fout := frontend.Output()
	i := strings.LastIndex(fout, "frontend: stopped:")
	if i < 0 {
		t.Fatalf("frontend printed no final counts:\n%s", fout)
	}
	if _, err := fmt.Sscanf(fout[i:], "frontend: stopped: requests=%d ok=%d failed=%d", &final.Requests, &final.OK, &final.Failed); err != nil {
		t.Fatalf("frontend's final counts: %v:\n%s", err, fout)
	}
	final.LastFailure = fs.LastFailure
	fs = final
	during := fs.Requests - before.Requests
	say("frontend across the rotation: %d calls, %d failed (total %d calls, %d failed)", during, fs.Failed-before.Failed, fs.Requests, fs.Failed)
	if fs.Failed != 0 {
		t.Errorf("%d calls failed (last: %s); want none", fs.Failed, fs.LastFailure)
	}
	if during < 2*rate {
		t.Errorf("only %d calls across the rotation; the loop stalled", during)
	}

	step(8, "the decision log is intact")
	out = bins.sigil.MustRun(t, "audit", "verify", logFile)
	say("sigil audit verify %s: %s", logFile, strings.TrimSpace(out))
	if !strings.HasPrefix(out, "ok: ") {
		t.Errorf("audit verify printed %q", out)
	}
	say("done in %s", time.Since(start).Round(100*time.Millisecond))
}
