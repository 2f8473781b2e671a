package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/attest/unix"
)

// serveSocket makes the agent serve the Workload API on sock with the real
// unix workload attestor.
func serveSocket(t testing.TB, sock string) func(*agent.Config) {
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return func(c *agent.Config) { c.Serve = agent.ServeSocket(agent.SocketConfig{Path: sock, Attestor: att}) }
}

func waitSocket(t testing.TB, sock string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s never appeared", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWorkloadAPIOverSocket(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	tok := tc.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	me := fmt.Sprintf("unix:uid:%d", os.Getuid())
	tc.entry(t, agentID, "spiffe://example.org/me", me)
	tc.entry(t, agentID, "spiffe://example.org/not-me", me, "unix:path:/nonexistent/binary")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok, serveSocket(t, sock))
	waitSocket(t, sock)
	addr := gsw.WithAddr("unix://" + sock)
	ctx := t.Context()

	var svid *x509svid.SVID
	deadline := time.Now().Add(30 * time.Second)
	for {
		xc, err := gsw.FetchX509Context(ctx, addr)
		if err == nil && len(xc.SVIDs) > 0 {
			if len(xc.SVIDs) != 1 || xc.SVIDs[0].ID.String() != "spiffe://example.org/me" {
				t.Fatalf("svids %v", xc.SVIDs)
			}
			svid = xc.SVIDs[0]
			if _, _, err := x509svid.Verify(svid.Certificates, xc.Bundles); err != nil {
				t.Fatalf("served SVID does not verify against the served bundle: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SVID over the socket: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok2, err := gsw.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, addr)
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if tok2.ID != svid.ID {
		t.Errorf("jwt for %s", tok2.ID)
	}
	got, err := gsw.ValidateJWTSVID(ctx, tok2.Marshal(), "db", addr)
	if err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if got.ID != svid.ID {
		t.Errorf("validated %s", got.ID)
	}
	if _, err := gsw.ValidateJWTSVID(ctx, tok2.Marshal(), "other", addr); err == nil {
		t.Error("validated a token for the wrong audience")
	}
}
