package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// An agent that was down while the CA prepared and activated a new signing
// key (so its persisted bundle lacks the key that now signs the CA's own
// serving certificate) must still reach the CA when it comes back: it
// verifies the CA by its bootstrap roots when the bundle it holds does not
// chain the CA's certificate, syncs, and serves SVIDs signed by the new key
// through go-spiffe's Workload API client. Before the fallback such an agent
// refused the CA ("certificate signed by unknown authority") until every
// key it held expired.
func TestAgentDownAcrossKeyActivationSyncsAgain(t *testing.T) {
	e := newEnv(t)
	e.startCA(t)
	e.enrol(t)
	e.startAgent(t)
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", idRoot, "--parent-id", e.agentID, "--selector", "unix:uid:0")...)
	old := e.uid0SVID(t, idRoot, nil)
	k1 := keyID(old.Certificates[1])
	t.Logf("agent serves %s signed by key %s", idRoot, k1[:16])

	// 1. The agent goes down with a bundle that holds only K1.
	if _, err := e.agent.Interrupt(t, 10*time.Second); err != nil {
		t.Logf("agent exit: %v", err)
	}

	// 2. While it is down the CA publishes K2 and signs with it at once
	// (a forced rotation), re-issuing its own serving certificate under K2.
	sigil.MustRun(t, e.admin("ca", "prepare")...)
	sigil.MustRun(t, e.admin("ca", "activate")...)
	// The key was published a moment ago, far less than the refresh hint:
	// the CA activates it as told, and says so.
	e.ca.WaitForOutput(t, "activating a ca key published for less than the publish wait", 10*time.Second)

	// 3. The agent comes back on its persisted identity and bundle.
	start := time.Now()
	e.startAgent(t)
	fresh := e.uid0SVID(t, idRoot, func(s *x509svid.SVID) bool { return keyID(s.Certificates[1]) != k1 })
	t.Logf("agent restarted: serves %s signed by the new key %s after %s", idRoot, keyID(fresh.Certificates[1])[:16], time.Since(start).Round(time.Millisecond))
	out := e.agent.Output()
	if !strings.Contains(out, "verified the CA by its bootstrap roots") {
		t.Fatalf("the agent's log does not say it fell back to its bootstrap roots:\n%s", out)
	}
	for line := range strings.Lines(out) {
		if strings.Contains(line, "verified the CA by its bootstrap roots") {
			t.Logf("agent log: %s", strings.TrimSpace(line))
		}
	}
	if n := strings.Count(out, "verified the CA by its bootstrap roots"); n != 1 {
		t.Errorf("the fallback was logged %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "unknown authority") {
		t.Errorf("the agent refused the CA on the way:\n%s", out)
	}
	// The new bundle is persisted: a second restart needs no fallback.
	if _, err := e.agent.Interrupt(t, 10*time.Second); err != nil {
		t.Logf("agent exit: %v", err)
	}
	e.startAgent(t)
	e.uid0SVID(t, idRoot, func(s *x509svid.SVID) bool { return keyID(s.Certificates[1]) != k1 })
	if out := e.agent.Output(); strings.Contains(out, "verified the CA by its bootstrap roots") {
		t.Errorf("after a sync the agent still falls back to its bootstrap roots:\n%s", out)
	}
}
