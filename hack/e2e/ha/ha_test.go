// Package ha is the end-to-end suite for CA replica failover; see README.md.
package ha

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

const td = "ha.test"

func TestMain(m *testing.M) { pgtest.Main(m) }

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	e2e.WriteFile(t, to, string(b), mode)
}

func TestFailoverZeroFailedCalls(t *testing.T) {
	sigil, err := e2e.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.Start(t)
	dir := t.TempDir()
	caConfig := func(name, addr string) string {
		p := filepath.Join(dir, "ca-"+name+".yaml")
		e2e.WriteFile(t, p, fmt.Sprintf("trust_domain: %s\ndata_dir: %s\nserver_address: %s\ninstance_id: %s\nstore:\n  type: postgres\n  dsn: %q\n",
			td, filepath.Join(dir, name), addr, name, dsn), 0o600)
		return p
	}
	addrA, addrB := e2e.FreeAddr(t), e2e.FreeAddr(t)
	cfgA, cfgB := caConfig("a", addrA), caConfig("b", addrB)
	adminA := filepath.Join(dir, "a", "admin.sock")

	// 1. a, then b with a's root.
	caA := sigil.Start(t, "ca", "run", "--config", cfgA)
	e2e.WaitForSocket(t, caA, adminA, 60*time.Second)
	copyFile(t, filepath.Join(dir, "a", "root.crt"), filepath.Join(dir, "b", "root.crt"), 0o644)
	copyFile(t, filepath.Join(dir, "a", "keys", "root.key"), filepath.Join(dir, "b", "keys", "root.key"), 0o600)
	caB := sigil.Start(t, "ca", "run", "--config", cfgB)
	e2e.WaitForSocket(t, caB, filepath.Join(dir, "b", "admin.sock"), 60*time.Second)

	// 2. A replica with a root of its own is refused.
	_, stderr, err := sigil.Run(t, "ca", "run", "--config", caConfig("c", e2e.FreeAddr(t)))
	if err == nil || !strings.Contains(stderr, "replicas with different roots") || !strings.Contains(stderr, "upstream.type: disk") {
		t.Fatalf("a self_signed replica with its own root: err %v, stderr:\n%s", err, stderr)
	}
	t.Logf("refused as it should be: %s", strings.TrimSpace(stderr))

	// 3. The agent, listing both replicas.
	admin := func(args ...string) string { return sigil.MustRun(t, append(args, "--admin-socket", adminA)...) }
	tok := strings.TrimSpace(admin("token", "create"))
	agentID := "spiffe://" + td + "/sigil/agent/join_token/" + tok
	admin("entry", "create", "--spiffe-id", "spiffe://"+td+"/w/echo", "--parent-id", agentID, "--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	e2e.WriteFile(t, filepath.Join(dir, "bundle.pem"), admin("bundle", "show", "--format", "pem"), 0o600)
	sock := filepath.Join(dir, "agent.sock")
	e2e.WriteFile(t, filepath.Join(dir, "agent.yaml"), fmt.Sprintf("trust_domain: %s\nserver_address: [%s, %s]\ndata_dir: agent\nsocket_path: %s\ntrust_bundle_file: bundle.pem\njoin_token: %s\n",
		td, addrA, addrB, sock, tok), 0o600)
	agent := sigil.Start(t, "agent", "run", "--config", filepath.Join(dir, "agent.yaml"))
	e2e.WaitForSocket(t, agent, sock, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+sock)))
	if err != nil {
		t.Fatalf("go-spiffe X509Source: %v", err)
	}
	defer source.Close()
	id := spiffeid.RequireFromString("spiffe://" + td + "/w/echo")
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(id), source))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	var calls, failed atomic.Int64
	call := func() error {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		c, err := spiffetls.DialWithMode(cctx, "tcp", lis.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(id), source))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			return fmt.Errorf("echo %q: %v", buf, err)
		}
		return nil
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			calls.Add(1)
			if err := call(); err != nil {
				failed.Add(1)
				t.Logf("call failed: %v", err)
			}
		}
	}()
	time.Sleep(2 * time.Second)

	// 4. Kill the replica the agent uses (the first listed).
	killed := time.Now()
	caA.Kill(t)
	re := regexp.MustCompile(`connected to the CA replica" server=` + regexp.QuoteMeta(addrB) + ` outage=(\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for !re.MatchString(agent.Output()) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not sync with replica b within 60s; agent output:\n%s", agent.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	failover := time.Since(killed)
	t.Logf("failover: %v from kill -9 of replica a to the agent's first successful sync with b (agent says outage=%s)",
		failover.Round(time.Millisecond), re.FindStringSubmatch(agent.Output())[1])

	// 5. a comes back.
	caA = sigil.Start(t, "ca", "run", "--config", cfgA)
	e2e.WaitForSocket(t, caA, adminA, 60*time.Second)
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	t.Logf("calls: %d made, %d failed", calls.Load(), failed.Load())
	if failed.Load() != 0 || calls.Load() < 50 {
		t.Fatalf("%d of %d calls failed (want 0 of at least 50)", failed.Load(), calls.Load())
	}

	// 6. Both replicas down, the agent killed with SIGKILL and started
	// again: its workload still gets its SVID over the Workload API.
	caA.Kill(t)
	caB.Kill(t)
	agent.Kill(t)
	restarted := time.Now()
	agent = sigil.Start(t, "agent", "run", "--config", filepath.Join(dir, "agent.yaml"))
	e2e.WaitForSocket(t, agent, sock, 60*time.Second)
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatalf("after kill -9 of the agent with every CA replica down: %v\nagent output:\n%s", err, agent.Output())
	}
	if svid.ID != id || !time.Now().Before(svid.Certificates[0].NotAfter) {
		t.Fatalf("got %s valid until %s", svid.ID, svid.Certificates[0].NotAfter)
	}
	t.Logf("agent restarted after kill -9 with no CA: SVID served %v after start", time.Since(restarted).Round(time.Millisecond))

	// 7. Replica b back on a quiet system; the agent syncs with it. Then
	// `sigil agent evict`: time until the workload's SVID stream ends.
	caB = sigil.Start(t, "ca", "run", "--config", cfgB)
	adminB := filepath.Join(dir, "b", "admin.sock")
	e2e.WaitForSocket(t, caB, adminB, 60*time.Second)
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(agent.Output(), `connected to the CA replica" server=`+addrB) && !strings.Contains(agent.Output(), `talking to the CA replica" server=`+addrB) {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted agent did not reach replica b; output:\n%s", agent.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // quiet
	ended := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	client, err := workloadapi.New(wctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	got := make(chan struct{}, 1)
	go func() {
		_ = client.WatchX509Context(wctx, watcher{
			update: func(c *workloadapi.X509Context) {
				if len(c.SVIDs) > 0 {
					select {
					case got <- struct{}{}:
					default:
					}
				}
			},
			fail: func(err error) {
				select {
				case ended <- err:
				default:
				}
			},
		})
	}()
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no SVID on the watch stream")
	}
	evicted := time.Now()
	sigil.MustRun(t, "agent", "evict", agentID, "--admin-socket", adminB)
	select {
	case err := <-ended:
		t.Logf("evict: the workload's SVID stream ended %v after `sigil agent evict` (%v)", time.Since(evicted).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Fatal("the workload's SVID stream did not end within 30s of the eviction")
	}
}

type watcher struct {
	update func(*workloadapi.X509Context)
	fail   func(error)
}

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.update(c) }
func (w watcher) OnX509ContextWatchError(err error)              { w.fail(err) }
