package agent_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigilhq/sigil/agent/svidstore"
)

// An agent restarted while the CA is down serves its workloads the SVIDs
// it had minted, never an expired one; a damaged SVID file is refused
// with a message and the agent still runs.
func TestRestartWhileCADownServesPersistedSVIDs(t *testing.T) {
	tc := newTestCA(t, time.Minute)
	tok := tc.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	tc.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	dataDir := filepath.Join(t.TempDir(), "agent")
	a, _, stop, _ := runAgent(t, tc, dataDir, tok)
	sub := a.Cache().Subscribe(sels("unix:uid:1000"))
	minted := waitFor(t, sub, "the web SVID", hasID("spiffe://example.org/web")).Identities[0].SVID
	sub.Close()
	path := filepath.Join(dataDir, svidstore.WorkloadsFileName)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := os.Stat(path)
		if err == nil {
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("%s mode %v, want 0600", path, st.Mode().Perm())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never persisted its workload SVIDs: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	tc.Stop()
	stop()
	a2, _, stop2, errc := runAgent(t, tc, dataDir, tok)
	sub2 := a2.Cache().Subscribe(sels("unix:uid:1000"))
	u := waitFor(t, sub2, "the persisted web SVID with the CA down", hasID("spiffe://example.org/web"))
	sub2.Close()
	got := u.Identities[0].SVID
	if !got.Certificates[0].Equal(minted.Certificates[0]) && got.Certificates[0].NotBefore.Before(minted.Certificates[0].NotBefore) {
		t.Error("served an SVID older than the one minted before the restart")
	}
	if !time.Now().Before(got.Certificates[0].NotAfter) {
		t.Error("served an expired SVID")
	}
	stop2()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	default:
	}

	t.Run("damaged file: refused, agent runs on", func(t *testing.T) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data[:len(data)/3], 0o600); err != nil {
			t.Fatal(err)
		}
		a3, _, _, errc := runAgent(t, tc, dataDir, tok)
		time.Sleep(500 * time.Millisecond)
		if e, _ := a3.Cache().Stats(); e != 0 {
			t.Errorf("a truncated file gave %d entries", e)
		}
		select {
		case err := <-errc:
			t.Fatalf("agent stopped: %v", err)
		default:
		}
		// Once the CA is back, it mints again.
		tc.Start()
		sub := a3.Cache().Subscribe(sels("unix:uid:1000"))
		defer sub.Close()
		waitFor(t, sub, "a new web SVID", hasID("spiffe://example.org/web"))
	})
}
