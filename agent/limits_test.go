package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent"
	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/cache"
	"github.com/sigilhq/sigil/agent/socketlimit"
	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/sds"
)

// attackEnv makes the test binary the attacker (TestAttackHelper): a uid
// with no entry opening SIGIL_ATTACK_CONNS connections with
// SIGIL_ATTACK_STREAMS pending SDS streams each on SIGIL_ATTACK_SOCKET.
const attackEnv = "SIGIL_ATTACK_SOCKET"

type attackResult struct {
	Attempts int            `json:"attempts"`
	Codes    map[string]int `json:"codes"` // how the streams that ended, ended
	Message  string         `json:"message"`
}

// TestAttackHelper is not a test: it is the attacker process run by
// TestSocketLimits under setpriv. It opens every stream, prints "ready",
// holds them until stdin closes, then prints an attackResult.
func TestAttackHelper(t *testing.T) {
	sock := os.Getenv(attackEnv)
	if sock == "" {
		return
	}
	conns, _ := strconv.Atoi(os.Getenv("SIGIL_ATTACK_CONNS"))
	streams, _ := strconv.Atoi(os.Getenv("SIGIL_ATTACK_STREAMS"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu  sync.Mutex
		res = attackResult{Codes: map[string]int{}}
		wg  sync.WaitGroup
	)
	for range conns {
		cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer cc.Close()
		c := secretv3.NewSecretDiscoveryServiceClient(cc)
		for range streams {
			res.Attempts++
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := c.StreamSecrets(ctx)
				if err == nil {
					err = s.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, TypeUrl: sds.SecretTypeURL})
					_, err = s.Recv()
				}
				if ctx.Err() != nil {
					return // held until the end
				}
				mu.Lock()
				defer mu.Unlock()
				res.Codes[status.Code(err).String()]++
				if status.Code(err) == codes.ResourceExhausted {
					res.Message = status.Convert(err).Message()
				}
			}()
		}
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	mu.Lock()
	out, _ := json.Marshal(res)
	mu.Unlock()
	fmt.Println(string(out))
	cancel()
	os.Exit(0)
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func rss(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

// The attack of issue 10: a uid with no entry opens thousands of pending
// SDS streams on many connections against a real agent socket. Past its
// per-uid limit every stream is refused with ResourceExhausted naming the
// limit, the agent's heap stays bounded, another uid is still served, and
// past the total limit that uid is refused too.
func TestSocketLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the attacker as another uid with setpriv and must run as root (hack/test.sh does, in CI)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv not found: install util-linux (apt-get install util-linux)")
	}
	const (
		perUID  = 256
		total   = perUID + 20
		conns   = 200
		streams = 100 // per connection: 20,000 attempts
	)
	// Agent SVIDs of an hour: the attack runs for minutes on a loaded
	// machine, and a join-token agent whose SVID expires stops serving.
	tc := newTestCAWith(t, time.Hour, time.Hour)
	tok := tc.token(t)
	agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
	tc.entry(t, agentID, "spiffe://example.org/root", "unix:uid:0")
	dir, err := os.MkdirTemp("", "lim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	att, err := unix.New(unix.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	lim, err := socketlimit.New(socketlimit.Config{StreamsPerUID: perUID, Streams: total, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok, func(c *agent.Config) {
		c.Serve = agent.ServeSocket(agent.SocketConfig{Path: sock, Attestor: att, Limiter: lim,
			Register: []func(*grpc.Server, *cache.Cache) error{agent.SDS(att, nil, nil)}})
	})
	waitSocket(t, sock)
	addr := gsw.WithAddr("unix://" + sock)
	ctx := t.Context()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := gsw.FetchX509SVID(ctx, addr); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("root never served: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	heap0, rss0 := heapInuse(), rss(t)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "attacker.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65533", "--regid=65533", "--clear-groups", exe, "-test.run=^TestAttackHelper$")
	cmd.Env = append(os.Environ(), attackEnv+"="+sock, "SIGIL_ATTACK_CONNS="+strconv.Itoa(conns), "SIGIL_ATTACK_STREAMS="+strconv.Itoa(streams))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("attacker: %q, %v", line, err)
	}
	// Every attempt past the limit is refused; the rest are held.
	// The wait ends on progress, not on a wall-clock budget: on a loaded
	// machine 20,000 refusals take minutes, but a stalled agent makes none.
	attack := time.Now()
	const stall = 60 * time.Second
	seen, progress := -1.0, time.Now()
	for {
		n := value(t, reg, "sigil_agent_socket_refusals_total", socketlimit.LimitStreamsPerUID)
		if n >= conns*streams-perUID {
			break
		}
		if n > seen {
			seen, progress = n, time.Now()
		} else if time.Since(progress) > stall {
			t.Fatalf("refusals stuck at %v for %s (calls %v, %s into the attack)", n, stall,
				value(t, reg, "sigil_agent_socket_calls", ""), time.Since(attack).Round(time.Second))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := value(t, reg, "sigil_agent_socket_busiest_uid_calls", ""); got != perUID {
		t.Fatalf("attacker holds %v calls, want %d", got, perUID)
	}
	t.Logf("attack refused in %s", time.Since(attack).Round(time.Millisecond))
	heap1, rss1 := heapInuse(), rss(t)
	t.Logf("%d attempts on %d connections: heap in use %d MB -> %d MB, RSS %s -> %s",
		conns*streams, conns, heap0>>20, heap1>>20, rss0, rss1)
	if heap1 > heap0+256<<20 {
		t.Fatalf("agent heap grew from %d MB to %d MB under the attack", heap0>>20, heap1>>20)
	}

	// Another uid is still served: go-spiffe and SDS.
	if _, err := gsw.FetchX509SVID(ctx, addr); err != nil {
		t.Fatalf("root during the attack: %v", err)
	}
	client, err := envoytest.Dial(sock, envoytest.Node("sidecar"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s, err := client.StreamSecrets(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(ctx); err != nil || s.Secret("default") == nil {
		t.Fatalf("root's SDS during the attack: %v", err)
	}
	// Up to the total limit, then refused.
	var last error
	for i := 0; i < total; i++ {
		s, err := client.StreamSecrets(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, last = s.Next(ctx); last != nil {
			break
		}
	}
	if status.Code(last) != codes.ResourceExhausted || !strings.Contains(status.Convert(last).Message(), "limits.max_streams") {
		t.Fatalf("past the total limit: %v", last)
	}

	if _, err := stdin.Write([]byte("done\n")); err != nil {
		t.Fatal(err)
	}
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var res attackResult
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("attacker said %q: %v", line, err)
	}
	if res.Attempts != conns*streams || res.Codes["ResourceExhausted"] != conns*streams-perUID || len(res.Codes) != 1 {
		t.Fatalf("attacker saw %+v", res)
	}
	if !strings.Contains(res.Message, "uid 65533") || !strings.Contains(res.Message, "limits.max_streams_per_uid") {
		t.Fatalf("refusal message %q", res.Message)
	}
}
