package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The admin CLI against a remote CA: `--server host:port` calls the admin
// API over mTLS with the X509-SVID the local agent gives this user. An
// admin entry's SVID is admitted; a plain entry's is refused with a
// message, as is a CA that is not there.
func TestRemoteAdminOverMTLS(t *testing.T) {
	e := newEnv(t)
	e.startCA(t)
	e.enrol(t)
	e.startAgent(t)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix://"+e.agentSock)
	plain := "spiffe://" + td + "/operator"
	id := strings.TrimSpace(sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", plain, "--parent-id", e.agentID, "--selector", "unix:uid:0", "-o", "json")...))
	var created struct {
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(id), &created); err != nil || len(created.Entries) != 1 {
		t.Fatalf("entry create -o json: %v: %s", err, id)
	}
	e.uid0SVID(t, plain, func(*x509svid.SVID) bool { return true })

	// Not an admin entry: refused, and the CLI says so.
	_, stderr, err := sigil.Run(t, "ca", "status", "--server", e.caAddr)
	if err == nil {
		t.Fatal("a non-admin SVID was admitted to the admin API")
	}
	t.Logf("non-admin: %v %s", err, strings.TrimSpace(stderr))
	if !strings.Contains(stderr, "admin") {
		t.Errorf("refusal does not say why: %s", stderr)
	}

	// The same entry made an admin entry: admitted.
	sigil.MustRun(t, e.admin("entry", "update", created.Entries[0].ID, "--admin")...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, stderr, err := sigil.Run(t, "ca", "status", "--server", e.caAddr, "-o", "json")
		if err == nil {
			if !strings.Contains(out, `"trust_domain": "`+td+`"`) {
				t.Fatalf("ca status over mTLS: %s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin SVID never admitted: %v %s", err, stderr)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// Env twin and a list call work the same way.
	t.Setenv("SIGIL_SERVER", e.caAddr)
	if out := sigil.MustRun(t, "entry", "list"); !strings.Contains(out, plain) {
		t.Fatalf("entry list over mTLS lacks %s:\n%s", plain, out)
	}

	// No agent for the SVID: a message naming the variable to set.
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix://"+e.dir+"/nothing.sock")
	_, stderr, err = sigil.Run(t, "ca", "status")
	if err == nil || !strings.Contains(stderr, "SPIFFE_ENDPOINT_SOCKET") {
		t.Fatalf("no agent: %v %s", err, stderr)
	}
}
