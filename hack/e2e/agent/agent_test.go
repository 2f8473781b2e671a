// Package agent is the end-to-end suite for `sigil ca run` with `sigil agent
// run`: workloads of several uids, spiffetls between them, and the faults of
// issue 3; see README.md.
package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/internal/e2e"
)

const td = "e2e.test"

// Workload uids: two with entries, one without.
const (
	uidServer = 64101
	uidClient = 64102
	uidNobody = 64103
)

const (
	idServer = "spiffe://" + td + "/w/server"
	idClient = "spiffe://" + td + "/w/client"
	idRoot   = "spiffe://" + td + "/w/root"       // the test process itself (uid 0)
	idExtra  = "spiffe://" + td + "/w/root-extra" // a second SVID for uid 0, deleted in step 3
)

var (
	sigil    *e2e.Binary
	mtlspeer string
)

func TestMain(m *testing.M) {
	// Fail before building anything when the suite cannot run at all.
	if _, err := e2e.SetprivPath(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	e2e.Main(m, "agent", func(b *e2e.Binary, dir string) error {
		sigil = b
		var err error
		mtlspeer, err = e2e.BuildPackage(dir, "./hack/e2e/agent/mtlspeer", "mtlspeer")
		return err
	})
}

// env is one CA and one agent in a directory the workload uids can
// traverse (t.TempDir() is 0700, so it is made here and removed in the
// cleanup).
type env struct {
	dir, caConfig, agentConfig string
	adminSock, agentSock       string
	caAddr                     string // the CA's node API; the same across a restart
	agentID                    string
	ca, agent                  *e2e.Proc
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "sigil-e2e-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sock"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{
		dir:         dir,
		caConfig:    filepath.Join(dir, "ca.yaml"),
		agentConfig: filepath.Join(dir, "agent.yaml"),
		adminSock:   filepath.Join(dir, "ca", "admin.sock"),
		agentSock:   filepath.Join(dir, "sock", "agent.sock"),
		caAddr:      e2e.FreeAddr(t),
	}
	// Short SVIDs so that a rotation happens within the test; the agent's
	// own SVID lives longer so that a CA outage never makes it attest again.
	e2e.WriteFile(t, e.caConfig, fmt.Sprintf(`trust_domain: %s
data_dir: %s
server_address: %s
ca_ttl: 10m
x509_svid_ttl: 30s
node_attestation:
  agent_svid_ttl: 5m
`, td, filepath.Join(dir, "ca"), e.caAddr), 0o600)
	return e
}

func (e *env) admin(args ...string) []string { return append(args, "--admin-socket", e.adminSock) }

func (e *env) startCA(t *testing.T) {
	t.Helper()
	os.Remove(e.adminSock) // a socket left by a killed CA would satisfy WaitForSocket
	e.ca = sigil.Start(t, "ca", "run", "--config", e.caConfig)
	e2e.WaitForSocket(t, e.ca, e.adminSock, 30*time.Second)
}

// enrol makes a join token, the bundle file and agent.yaml.
func (e *env) enrol(t *testing.T) {
	t.Helper()
	tok := strings.TrimSpace(sigil.MustRun(t, e.admin("token", "create")...))
	e.agentID = "spiffe://" + td + "/sigil/agent/join_token/" + tok
	e2e.WriteFile(t, filepath.Join(e.dir, "bundle.pem"), sigil.MustRun(t, e.admin("bundle", "show", "--format", "pem")...), 0o644)
	e2e.WriteFile(t, e.agentConfig, fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: agent
socket_path: %s
trust_bundle_file: bundle.pem
join_token: %s
`, td, e.caAddr, e.agentSock, tok), 0o600)
}

func (e *env) startAgent(t *testing.T) {
	t.Helper()
	e.agent = sigil.Start(t, "agent", "run", "--config", e.agentConfig)
	e2e.WaitForSocket(t, e.agent, e.agentSock, 30*time.Second)
}

// createEntry creates an entry parented to the agent and returns its ID.
func (e *env) createEntry(t *testing.T, spiffeID string, uid int) string {
	t.Helper()
	out := sigil.MustRun(t, e.admin("entry", "create", "-o", "json", "--spiffe-id", spiffeID, "--parent-id", e.agentID,
		"--selector", fmt.Sprintf("unix:uid:%d", uid))...)
	var resp struct {
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Entries) != 1 || resp.Entries[0].ID == "" {
		t.Fatalf("entry create -o json printed %q (%v)", out, err)
	}
	return resp.Entries[0].ID
}

// printID runs `mtlspeer -print-id` as uid until it succeeds (the agent may
// still be minting) and returns the printed SPIFFE ID.
func (e *env) printID(t *testing.T, uid int) string {
	t.Helper()
	return e.printIDWithin(t, uid, 30*time.Second)
}

// printIDOnce is printID without retries: the agent must serve at once.
func (e *env) printIDOnce(t *testing.T, uid int) string {
	t.Helper()
	return e.printIDWithin(t, uid, 0)
}

func (e *env) printIDWithin(t *testing.T, uid int, retryFor time.Duration) string {
	t.Helper()
	peer := e2e.AsUID(e2e.Setpriv(t), mtlspeer, uid)
	deadline := time.Now().Add(retryFor)
	for {
		out, errOut, err := peer.Run(t, "-socket", e.agentSock, "-print-id")
		if err == nil {
			return strings.TrimSpace(out)
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("mtlspeer -print-id as uid %d: %v\n%s%s", uid, err, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// watcher records what a go-spiffe X509Context watch sees.
type watcher struct {
	mu      sync.Mutex
	updates []update
	errs    []error
	changed chan struct{}
}

type update struct {
	at    time.Time
	ids   []string
	leafs []*x509.Certificate   // leaf of each SVID, same order as ids
	chain [][]*x509.Certificate // intermediates of each SVID
	roots []*x509.Certificate
}

func newWatcher() *watcher { return &watcher{changed: make(chan struct{}, 1)} }

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	u := update{at: time.Now()}
	for _, s := range c.SVIDs {
		u.ids = append(u.ids, s.ID.String())
		u.leafs = append(u.leafs, s.Certificates[0])
		u.chain = append(u.chain, s.Certificates[1:])
	}
	for _, b := range c.Bundles.Bundles() {
		u.roots = append(u.roots, b.X509Authorities()...)
	}
	w.mu.Lock()
	w.updates = append(w.updates, u)
	w.mu.Unlock()
	w.poke()
}

func (w *watcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
	w.poke()
}

func (w *watcher) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watcher) snapshot() ([]update, []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]update(nil), w.updates...), append([]error(nil), w.errs...)
}

// waitFor waits until ok holds for the latest update, or fails with why.
func (w *watcher) waitFor(t *testing.T, timeout time.Duration, what string, ok func(update) bool) update {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if us, _ := w.snapshot(); len(us) > 0 && ok(us[len(us)-1]) {
			return us[len(us)-1]
		}
		select {
		case <-w.changed:
		case <-deadline.C:
			us, errs := w.snapshot()
			last := "none"
			if len(us) > 0 {
				last = fmt.Sprintf("%v at %s", us[len(us)-1].ids, us[len(us)-1].at.Format(time.RFC3339Nano))
			}
			t.Fatalf("%s: not seen within %s (updates: %d, last: %s; watch errors: %v)", what, timeout, len(us), last, errs)
		}
	}
}

func (u update) leaf(id string) *x509.Certificate {
	for i, x := range u.ids {
		if x == id {
			return u.leafs[i]
		}
	}
	return nil
}

// verifies checks that the SVID for id in u chains to u's roots.
func (u update) verifies(t *testing.T, id string) {
	t.Helper()
	leaf := u.leaf(id)
	if leaf == nil {
		t.Fatalf("no SVID for %s in %v", id, u.ids)
	}
	pool := x509.NewCertPool()
	for _, r := range u.roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for i, x := range u.ids {
		if x == id {
			for _, c := range u.chain[i] {
				inter.AddCert(c)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("SVID %s (serial %s) does not verify against the bundle: %v", id, leaf.SerialNumber, err)
	}
}

func TestAgentEndToEnd(t *testing.T) {
	setpriv := e2e.Setpriv(t)
	e := newEnv(t)

	// 1. A CA, an agent attested with a join token, entries for two uids
	// and for the test process.
	start := time.Now()
	e.startCA(t)
	e.enrol(t)
	e.createEntry(t, idServer, uidServer)
	e.createEntry(t, idClient, uidClient)
	e.createEntry(t, idRoot, 0)
	extraEntry := e.createEntry(t, idExtra, 0)
	e.startAgent(t)
	if got := e.printID(t, uidServer); got != idServer {
		t.Fatalf("uid %d got SPIFFE ID %q, want %s", uidServer, got, idServer)
	}
	if got := e.printID(t, uidClient); got != idClient {
		t.Fatalf("uid %d got SPIFFE ID %q, want %s", uidClient, got, idClient)
	}
	t.Logf("CA and agent up, both workloads served, in %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(e.agent.Output(), "node attested") {
		t.Fatalf("the agent did not log its attestation:\n%s", e.agent.Output())
	}

	// A uid with no entry is refused (PermissionDenied from the agent),
	// told so with its uid, and exits 4.
	nobody := e2e.AsUID(setpriv, sigil.Path, uidNobody)
	wantMsg := fmt.Sprintf("has no identity for this process (uid %d)", uidNobody)
	if out, errOut, err := nobody.Run(t, "svid", "fetch", "--socket", e.agentSock, "--timeout", "5s"); err == nil || !strings.Contains(errOut, wantMsg) || exitStatus(err) != 4 {
		t.Fatalf("svid fetch as uid %d (no entry): err=%v stdout=%q stderr=%q, want exit 4 and %q", uidNobody, err, out, errOut, wantMsg)
	}

	// Two spiffetls programs complete mTLS, each authorizing the other's ID.
	server := e2e.AsUID(setpriv, mtlspeer, uidServer)
	client := e2e.AsUID(setpriv, mtlspeer, uidClient)
	addr := e2e.FreeAddr(t)
	srv := server.Start(t, "-socket", e.agentSock, "-listen", addr, "-peer", idClient)
	srv.WaitForOutput(t, "listening", 30*time.Second)
	roundTrip := func(when string) {
		t.Helper()
		if out, errOut, err := client.Run(t, "-socket", e.agentSock, "-dial", addr, "-peer", idServer); err != nil || !strings.Contains(out, "reply to hello") {
			t.Fatalf("mTLS client→server %s: err=%v stdout=%q stderr=%q", when, err, out, errOut)
		}
	}
	roundTrip("")

	// A client that expects another server ID refuses the server.
	const idOther = "spiffe://" + td + "/w/other"
	if out, errOut, err := client.Run(t, "-socket", e.agentSock, "-dial", addr, "-peer", idOther); err == nil || strings.Contains(out, "reply") {
		t.Fatalf("client expecting %s accepted %s: stdout=%q stderr=%q", idOther, idServer, out, errOut)
	} else {
		t.Logf("client expecting another ID: %s", strings.TrimSpace(errOut))
	}
	// A server that accepts only another client ID refuses our client.
	strictAddr := e2e.FreeAddr(t)
	strict := server.Start(t, "-socket", e.agentSock, "-listen", strictAddr, "-peer", idOther)
	strict.WaitForOutput(t, "listening", 30*time.Second)
	if out, errOut, err := client.Run(t, "-socket", e.agentSock, "-dial", strictAddr, "-peer", idServer); err == nil || strings.Contains(out, "reply") {
		t.Fatalf("server accepting only %s served %s: stdout=%q stderr=%q", idOther, idClient, out, errOut)
	} else {
		t.Logf("server refusing our client: %s", strings.TrimSpace(errOut))
	}

	// A go-spiffe watcher in this process (uid 0) stays open from here on.
	wctx, wcancel := context.WithCancel(context.Background())
	wc, err := workloadapi.New(wctx, workloadapi.WithAddr("unix://"+e.agentSock))
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher()
	watchDone := make(chan error, 1)
	go func() { watchDone <- wc.WatchX509Context(wctx, w) }()
	t.Cleanup(func() { wcancel(); <-watchDone; wc.Close() })
	first := w.waitFor(t, 10*time.Second, "first update with both uid-0 SVIDs", func(u update) bool {
		return u.leaf(idRoot) != nil && u.leaf(idExtra) != nil
	})
	first.verifies(t, idRoot)

	// 2a. Stop the CA and keep it down past the point where the workload's
	// SVID is due for rotation (half its life, ±10% jitter): the workloads
	// keep their valid SVIDs and the stream stays open.
	_, errsBefore := w.snapshot()
	if _, err := e.ca.Interrupt(t, 15*time.Second); err != nil {
		t.Fatalf("CA exited with %v after SIGINT", err)
	}
	stopped := time.Now()
	time.Sleep(2 * time.Second) // long enough for the agent to lose its CA stream and for an in-flight update to land
	if got := e.printIDOnce(t, uidServer); got != idServer {
		t.Fatalf("with the CA down, uid %d got %q", uidServer, got)
	}
	if out, errOut, err := sigil.Run(t, "svid", "fetch", "--socket", e.agentSock, "--timeout", "5s"); err != nil || !strings.Contains(out, idRoot) {
		t.Fatalf("svid fetch with the CA down: err=%v stdout=%q stderr=%q", err, out, errOut)
	}
	us, _ := w.snapshot()
	held := us[len(us)-1].leaf(idRoot) // nothing newer can be minted while the CA is down
	if held == nil || time.Now().After(held.NotAfter) {
		t.Fatalf("with the CA down the workload holds no valid SVID: %v", us[len(us)-1].ids)
	}
	due := held.NotBefore.Add(held.NotAfter.Sub(held.NotBefore) * 6 / 10)
	time.Sleep(time.Until(due))
	if got := e.printIDOnce(t, uidClient); got != idClient {
		t.Fatalf("with the CA down past the rotation point, uid %d got %q", uidClient, got)
	}
	us, errsDuring := w.snapshot()
	if len(errsDuring) != len(errsBefore) {
		t.Fatalf("the watch stream broke while the CA was down: %v", errsDuring[len(errsBefore):])
	}
	if last := us[len(us)-1].leaf(idRoot); last == nil || !last.Equal(held) || time.Now().After(held.NotAfter) {
		t.Fatalf("with the CA down past the rotation point the workload does not hold its unexpired SVID (serial %s): %v", held.SerialNumber, us[len(us)-1].ids)
	}

	// 2b. Start it again: rotation resumes with no workload action, before
	// the SVID held through the outage expires.
	e.startCA(t)
	restarted := time.Now()
	t.Logf("CA was down for %s; the held SVID was due for rotation from %s after the stop and expires %s after the restart",
		restarted.Sub(stopped).Round(time.Millisecond), due.Sub(stopped).Round(time.Millisecond), held.NotAfter.Sub(restarted).Round(time.Millisecond))
	rotated := w.waitFor(t, 45*time.Second, "an SVID rotated after the CA came back", func(u update) bool {
		l := u.leaf(idRoot)
		return l != nil && l.SerialNumber.Cmp(held.SerialNumber) != 0
	})
	rotated.verifies(t, idRoot)
	if rotated.at.After(held.NotAfter) {
		t.Fatalf("the rotated SVID arrived at %s, after the held one expired at %s", rotated.at, held.NotAfter)
	}
	// Only the restarted CA can have minted it: the held SVID is the last
	// one minted before the stop (the CA backdates NotBefore, so that
	// field cannot tell).
	t.Logf("rotation after the CA came back: serial %s → %s, seen %s after the restart",
		held.SerialNumber, rotated.leaf(idRoot).SerialNumber, rotated.at.Sub(restarted).Round(time.Millisecond))
	if _, errs := w.snapshot(); len(errs) != len(errsBefore) {
		t.Fatalf("the watch stream broke across the CA restart: %v", errs[len(errsBefore):])
	}

	// The server, untouched since step 1, still completes mTLS.
	roundTrip("after the CA restart")

	// 2c. Restart the agent: it serves again without attesting again.
	if _, err := e.agent.Interrupt(t, 15*time.Second); err != nil {
		t.Fatalf("agent exited with %v after SIGINT", err)
	}
	agentRestarted := time.Now()
	e.startAgent(t)
	if got := e.printID(t, uidClient); got != idClient {
		t.Fatalf("after the agent restart uid %d got %q", uidClient, got)
	}
	if out := e.agent.Output(); strings.Contains(out, "node attested") || !strings.Contains(out, "using the persisted agent identity") {
		t.Fatalf("the restarted agent attested again instead of using its persisted identity:\n%s", out)
	}
	if strings.Contains(e.ca.Output(), "agent attested") {
		t.Fatalf("the CA saw a new attestation after the agent restart:\n%s", e.ca.Output())
	}
	var agents struct {
		Agents []struct {
			ID string `json:"id"`
		} `json:"agents"`
	}
	out := sigil.MustRun(t, e.admin("agent", "list", "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &agents); err != nil || len(agents.Agents) != 1 || agents.Agents[0].ID != e.agentID {
		t.Fatalf("agent list after the restart: %v\n%s\nwant exactly %s", err, out, e.agentID)
	}
	// The watcher reconnects by itself (go-spiffe backs off from 1 s).
	back := w.waitFor(t, 15*time.Second, "an update after the agent restart", func(u update) bool { return u.at.After(agentRestarted) && u.leaf(idRoot) != nil })
	t.Logf("the go-spiffe watcher was served again %s after the agent restart", back.at.Sub(agentRestarted).Round(time.Millisecond))

	roundTrip("after the agent restart")

	// 3. Deleting an entry removes that SVID from the workload's stream.
	us, _ = w.snapshot()
	since := len(us)
	deleted := time.Now()
	sigil.MustRun(t, e.admin("entry", "delete", extraEntry)...)
	returned := time.Since(deleted)
	gone := w.waitFor(t, 5*time.Second, "the deleted entry's SVID leaving the stream", func(u update) bool {
		return u.leaf(idExtra) == nil
	})
	if us, _ := w.snapshot(); len(us) <= since {
		t.Fatal("no update after the delete")
	}
	if gone.leaf(idRoot) == nil {
		t.Fatalf("deleting %s also removed %s: %v", idExtra, idRoot, gone.ids)
	}
	t.Logf("entry delete → SVID gone from the go-spiffe stream: %s from the start of `sigil entry delete` (which returned after %s)",
		gone.at.Sub(deleted).Round(time.Millisecond), returned.Round(time.Millisecond))
	t.Logf("suite took %s", time.Since(start).Round(time.Millisecond))
}

// exitStatus is the exit code behind a command's error, -1 if it has none.
func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
