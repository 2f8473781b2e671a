package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/nodeattest"
	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/health"
	"github.com/sigilhq/sigil/internal/workload"
)

func freeAddr(t *testing.T) string { return e2e.FreeAddr(t) }

// get returns the status code and body of an HTTP GET.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls f until it returns nil, failing with its last error
// after a generous bound (only a bound on a hung test).
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestExpiredSVIDsWithheldWhileCAIsDown: with the CA stopped past the life
// of a workload's only SVID, the Workload API answers PermissionDenied,
// SDS has no secret for it and /ready is 503; the CA's return brings the
// SVID back.
func TestExpiredSVIDsWithheldWhileCAIsDown(t *testing.T) {
	tc := newTestCAWith(t, 20*time.Second, time.Hour)
	tok := tc.token(t)
	tc.entry(t, "spiffe://example.org/sigil/agent/join_token/"+tok, "spiffe://example.org/me", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	healthAddr := freeAddr(t)
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a, reg, _, _ := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.Serve = agent.ServeSocket(agent.SocketConfig{Path: sock, Attestor: att, Register: []func(*grpc.Server, *cache.Cache) error{agent.SDS(att, nil, nil)}})
	})
	sub := a.Cache().Subscribe(sels(fmt.Sprintf("unix:uid:%d", os.Getuid())))
	defer sub.Close()
	held := waitFor(t, sub, "the SVID", hasID("spiffe://example.org/me")).Identities[0].SVID
	waitSocket(t, sock)
	ctx := t.Context()
	addr := gsw.WithAddr("unix://" + sock)
	if _, err := gsw.FetchX509SVID(ctx, addr); err != nil {
		t.Fatalf("fetch before the outage: %v", err)
	}
	hs, err := health.New(health.Config{Address: healthAddr, Ready: a.Ready})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Run(t.Context()) }()
	eventually(t, "ready before the outage", func() error { return a.Ready(context.Background()) })

	tc.Stop()
	notAfter := held.Certificates[0].NotAfter
	gone := waitFor(t, sub, "the SVID to be withdrawn at its NotAfter", func(u workload.Update) bool {
		for _, id := range u.Identities {
			if !time.Now().Before(id.SVID.Certificates[0].NotAfter) {
				t.Fatalf("update with an SVID that expired at %v", id.SVID.Certificates[0].NotAfter)
			}
		}
		return len(u.Identities) == 0
	})
	if gone.Bundle == nil {
		t.Error("the bundle went with the SVID")
	}
	if late := time.Since(notAfter); late > 2*time.Second {
		t.Errorf("withdrawn %v after NotAfter", late)
	}

	_, err = gsw.FetchX509SVID(ctx, addr)
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchX509SVID after expiry: %v, want PermissionDenied", err)
	}
	_, err = gsw.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x"}, addr)
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID after expiry: %v, want PermissionDenied", err)
	}
	client, err := envoytest.Dial(sock, envoytest.Node("sidecar"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if resp, err := client.Fetch(ctx, "default"); status.Code(err) != codes.NotFound {
		t.Errorf("SDS fetch of default after expiry: %v, %v; want NotFound", resp, err)
	}
	code, body := get(t, "http://"+healthAddr+"/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "withheld") {
		t.Errorf("/ready = %d %q, want 503 naming the withheld SVIDs", code, body)
	}
	if code, _ := get(t, "http://"+healthAddr+"/live"); code != http.StatusOK {
		t.Errorf("/live = %d", code)
	}
	if n := value(t, reg, "sigil_agent_svids_withheld", "expired"); n != 1 {
		t.Errorf("sigil_agent_svids_withheld{expired} = %v", n)
	}

	tc.Start()
	waitFor(t, sub, "a new SVID once the CA is back", hasID("spiffe://example.org/me"))
	eventually(t, "workload api serving again", func() error { _, err := gsw.FetchX509SVID(ctx, addr); return err })
	eventually(t, "ready again", func() error {
		if code, body := get(t, "http://"+healthAddr+"/ready"); code != http.StatusOK {
			return errors.New(body)
		}
		return nil
	})
}

// TestJoinTokenAgentSVIDExpired: a join-token agent whose own SVID expired
// cannot attest again; it stops and says exactly what to do.
func TestJoinTokenAgentSVIDExpired(t *testing.T) {
	tc := newTestCAWith(t, time.Hour, 20*time.Second)
	tok := tc.token(t)
	a, _, _, errc := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok)
	eventually(t, "attested", func() error {
		if _, ok := a.ID(); !ok {
			return errors.New("no identity")
		}
		return nil
	})
	tc.Stop()
	select {
	case err := <-errc:
		if !errors.Is(err, agent.ErrTokenUsed) || !strings.Contains(err.Error(), "agent SVID expired at") ||
			!strings.Contains(err.Error(), "sigil token create") || !strings.Contains(err.Error(), "--join-token") {
			t.Fatalf("Run = %v, want the expiry and what to do", err)
		}
		if r := a.Ready(context.Background()); r == nil || !strings.Contains(r.Error(), "join-token agents cannot re-attest") {
			t.Errorf("Ready = %v", r)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the agent kept running on an expired SVID")
	}
}

// TestX509PoPAgentRecoversAfterItsSVIDExpired: an x509pop agent whose own
// SVID expired while the CA was down attests again when the CA is back
// and serves new SVIDs.
func TestX509PoPAgentRecoversAfterItsSVIDExpired(t *testing.T) {
	tc := newTestCAWith(t, time.Hour, 20*time.Second)
	pop, agentID := x509popNode(t, tc)
	tc.entry(t, agentID, "spiffe://example.org/web", "unix:uid:1000")
	a, reg, _, errc := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), "", func(c *agent.Config) { c.Attestor = pop })
	sub := a.Cache().Subscribe(sels("unix:uid:1000"))
	defer sub.Close()
	waitFor(t, sub, "the web SVID", hasID("spiffe://example.org/web"))
	tc.Stop()
	eventually(t, "the agent to report its expired SVID", func() error {
		if r := a.Ready(context.Background()); r == nil || !strings.Contains(r.Error(), "agent SVID expired at") {
			return fmt.Errorf("Ready = %v", r)
		}
		return nil
	})
	tc.Start()
	eventually(t, "attested again", func() error {
		if n := value(t, reg, "sigil_agent_attestations_total", "ok"); n < 2 {
			return fmt.Errorf("%v attestations", n)
		}
		return nil
	})
	tc.entry(t, agentID, "spiffe://example.org/web2", "unix:uid:1000", "unix:gid:5")
	sub2 := a.Cache().Subscribe(sels("unix:uid:1000", "unix:gid:5"))
	defer sub2.Close()
	waitFor(t, sub2, "both SVIDs after attesting again", func(u workload.Update) bool { return len(u.Identities) == 2 })
	eventually(t, "ready again", func() error { return a.Ready(context.Background()) })
	select {
	case err := <-errc:
		t.Fatalf("Run ended: %v", err)
	default:
	}
}

// TestBootstrapFailureStopsTheHealthServer: a bootstrap that will not heal
// ends Run with the error (cmd/sigil stops the health server when Run ends).
func TestBootstrapFailureStopsTheHealthServer(t *testing.T) {
	tc := newTestCA(t, time.Hour)
	a, err := agent.New(agent.Config{
		TrustDomain: td, ServerAddress: tc.addr, DataDir: t.TempDir(), BootstrapBundle: tc.roots,
		Attestor: nodeattest.JoinToken{Token: "nope"},
		RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("Run kept going after a bad join token")
	}
	if err == nil || !strings.Contains(err.Error(), "sigil token create") {
		t.Fatalf("Run = %v", err)
	}
}

// TestCAWithANewRoot: a CA that comes back under a root the agent does not
// trust is reported with how to re-bootstrap, not retried silently.
func TestCAWithANewRoot(t *testing.T) {
	tc := newTestCAWith(t, time.Hour, 20*time.Second)
	tok := tc.token(t)
	a, _, _, _ := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok)
	eventually(t, "ready", func() error { return a.Ready(context.Background()) })
	tc.Stop()
	other := newTestCAWith(t, time.Hour, 20*time.Second)
	other.Stop()
	other.addr = tc.addr
	other.Start()
	eventually(t, "the agent to say the CA cannot be verified", func() error {
		r := a.Ready(context.Background())
		if r == nil || !strings.Contains(r.Error(), "re-bootstrap") || !strings.Contains(r.Error(), "trust_bundle_file") {
			return fmt.Errorf("Ready = %v", r)
		}
		return nil
	})
}
