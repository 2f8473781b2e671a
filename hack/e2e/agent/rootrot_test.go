package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/internal/e2e"
)

// caRoots reads the root journal from `sigil ca status -o json`.
type caRoots struct {
	Roots []struct {
		ID        string    `json:"id"`
		State     string    `json:"state"`
		Prepared  time.Time `json:"prepared"`
		Published time.Time `json:"published"`
		Activated time.Time `json:"activated"`
		Retired   time.Time `json:"retired"`
		Gone      time.Time `json:"gone"`
		Waiting   string    `json:"waiting"`
	} `json:"roots"`
}

func (e *env) roots(t *testing.T) caRoots {
	t.Helper()
	out := sigil.MustRun(t, e.admin("ca", "status", "-o", "json")...)
	var st caRoots
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("ca status -o json: %v\n%s", err, out)
	}
	return st
}

// waitRoot waits until root id reaches state, logging what the CA waits for.
func (e *env) waitRoot(t *testing.T, id, state string, within time.Duration) caRoots {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for {
		st := e.roots(t)
		for _, r := range st.Roots {
			if r.ID != id {
				continue
			}
			if r.State == state {
				return st
			}
			if w := r.State + ": " + r.Waiting; w != last {
				last = w
				t.Logf("root %s is %s", id[:16], w)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("root %s not %s within %s:\n%s", id[:16], state, within, sigil.MustRun(t, e.admin("ca", "status")...))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Issue 12, root rotation against real processes: a go-spiffe client makes
// a new mTLS handshake per call to a go-spiffe server, both fed by the
// agent's Workload API, across a full root rotation (`sigil ca root
// rotate` until the old root is gone): no call may fail. Then the agent,
// restarted with its identity removed, a new join token and its original
// trust_bundle_file (whose certificates expired with the old root), still
// attests, by the roots it learned from the CA during the rotation.
func TestRootRotationFailsNoCalls(t *testing.T) {
	e := newEnv(t)
	// Short lives so that the old root's keys expire within the test;
	// agents renew every ~10 s, so each learns the new root quickly.
	e2e.WriteFile(t, e.caConfig, fmt.Sprintf(`trust_domain: %s
data_dir: %s
server_address: %s
ca_ttl: 2m
x509_svid_ttl: 30s
jwt_svid_ttl: 1m
bundle_refresh_hint: 5s
node_attestation:
  agent_svid_ttl: 20s
`, td, filepath.Join(e.dir, "ca"), e.caAddr), 0o600)
	e.startCA(t)
	e.enrol(t)
	e.startAgent(t)
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idRoot, "--parent-id", e.agentID, "--selector", "unix:uid:0")...)
	oldSVID := e.uid0SVID(t, idRoot, nil)
	oldAKI := oldSVID.Certificates[1].AuthorityKeyId
	before := e.roots(t)
	if len(before.Roots) != 1 || before.Roots[0].State != "active" {
		t.Fatalf("root journal before: %+v, want one active root", before.Roots)
	}
	oldID := before.Roots[0].ID

	serverSrc, clientSrc := e.newSource(t), e.newSource(t)
	addr := goSPIFFEServer(t, serverSrc)
	if err := call(addr, clientSrc, clientSrc); err != nil {
		t.Fatalf("first call: %v", err)
	}
	var calls, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			calls.Add(1)
			if err := call(addr, clientSrc, clientSrc); err != nil {
				failed.Add(1)
				mu.Lock()
				if len(errs) < 10 {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
			}
		}
	})
	start := time.Now()
	out := sigil.MustRun(t, e.admin("ca", "root", "rotate", "-o", "json")...)
	var rotated struct {
		Root struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"root"`
	}
	if err := json.Unmarshal([]byte(out), &rotated); err != nil || rotated.Root.ID == "" || rotated.Root.ID == oldID {
		t.Fatalf("ca root rotate -o json printed %q (%v)", out, err)
	}
	newID := rotated.Root.ID
	t.Logf("ca root rotate: new root %s %s", newID[:16], rotated.Root.State)
	e.waitRoot(t, newID, "active", 90*time.Second)
	activated := time.Since(start)
	// The agent rolls its SVIDs onto a signing key of the new root.
	e.uid0SVID(t, idRoot, func(s *x509svid.SVID) bool { return !bytes.Equal(s.Certificates[1].AuthorityKeyId, oldAKI) })
	e.waitRoot(t, oldID, "gone", 4*time.Minute)
	took := time.Since(start)
	// A few more Workload API pushes past the end.
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	for _, r := range e.roots(t).Roots {
		t.Logf("root %s: %s (prepared %s, published %s, activated %s, retired %s, gone %s)", r.ID[:16], r.State,
			r.Prepared.Format(time.TimeOnly), r.Published.Format(time.TimeOnly), r.Activated.Format(time.TimeOnly),
			r.Retired.Format(time.TimeOnly), r.Gone.Format(time.TimeOnly))
	}
	t.Logf("%d calls (a new mTLS handshake each) across the root rotation, %d failed; rotate → new root active %s, → old root gone %s",
		calls.Load(), failed.Load(), activated.Round(time.Millisecond), took.Round(time.Millisecond))
	if failed.Load() > 0 {
		t.Fatalf("%d of %d calls failed across the root rotation: %v", failed.Load(), calls.Load(), errs)
	}
	if calls.Load() < 10 {
		t.Fatalf("only %d calls: the test shows nothing", calls.Load())
	}

	// A plain restart: the agent resumes its identity and serves.
	if _, err := e.agent.Interrupt(t, 10*time.Second); err != nil {
		t.Logf("agent exit: %v", err)
	}
	e.startAgent(t)
	e.uid0SVID(t, idRoot, nil)
	t.Log("agent restarted after the rotation: serves SVIDs")

	// An agent that lost its identity must verify the CA by its bootstrap
	// trust. trust_bundle_file holds what the CA served before the
	// rotation, long expired; without the learned roots it cannot attest.
	if _, err := e.agent.Interrupt(t, 10*time.Second); err != nil {
		t.Logf("agent exit: %v", err)
	}
	agentDir := filepath.Join(e.dir, "agent")
	for _, f := range []string{"agent-identity.json", "workload-svids.json"} {
		if err := os.Remove(filepath.Join(agentDir, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	learned := filepath.Join(agentDir, "bootstrap-roots.pem")
	if _, err := os.Stat(learned); err != nil {
		t.Fatalf("the agent persisted no learned roots: %v", err)
	}
	e.reenrol(t)
	if err := os.Rename(learned, learned+".away"); err != nil {
		t.Fatal(err)
	}
	p := sigil.Start(t, "agent", "run", "--config", e.agentConfig)
	if err := p.Wait(t, 60*time.Second); err == nil || !strings.Contains(p.Output(), "certificate") {
		t.Fatalf("an agent with only the pre-rotation trust_bundle_file attested (exit %v):\n%s", err, p.Output())
	}
	t.Log("without the learned roots, the agent refuses the CA (as it must)")
	if err := os.Rename(learned+".away", learned); err != nil {
		t.Fatal(err)
	}
	e.startAgent(t)
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idExtra, "--parent-id", e.agentID, "--selector", "unix:uid:0")...)
	e.uid0SVID(t, idExtra, nil)
	t.Log("agent with a new identity attested by the learned root and serves SVIDs")
}

// reenrol gives the agent a new join token, keeping trust_bundle_file.
func (e *env) reenrol(t *testing.T) {
	t.Helper()
	tok := strings.TrimSpace(sigil.MustRun(t, e.admin("token", "create")...))
	e.agentID = "spiffe://" + td + "/sigil/agent/join_token/" + tok
	e2e.WriteFile(t, e.agentConfig, fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: agent
socket_path: %s
trust_bundle_file: bundle.pem
join_token: %s
`, td, e.caAddr, e.agentSock, tok), 0o600)
}
