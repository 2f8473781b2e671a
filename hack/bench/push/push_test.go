// Package push measures, with real `sigil ca run` and `sigil agent run`
// processes, how long an entry change takes to reach a go-spiffe client
// (one CA on SQLite; two CA replicas on one PostgreSQL, the entry made on
// the replica the agent is not connected to), and how long
// `sigil entry create --file` takes for 10,000 and 100,000 entries. It logs
// figures and asserts none: run it with -v (see README.md). TestPushSPIRE
// times the same interval against a real spire-server and spire-agent.
package push

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

const td = "example.org"

func TestMain(m *testing.M) { pgtest.Main(m) }

// samples is how many entry changes each case times.
const samples = 40

// bench is one CA setup with an agent and a go-spiffe watcher (uid 0,
// this process) on it.
type bench struct {
	sigil   *e2e.Binary
	dir     string
	agentID string
	// write is the admin socket entries are created on; the agent syncs
	// from the CA of the first admin socket.
	write  string
	admins []string
	w      *watcher
}

func start(t *testing.T, dsn string, replicas int) *bench {
	t.Helper()
	dir := t.TempDir()
	sigil, err := e2e.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{sigil: sigil, dir: dir}
	var addrs []string
	upstream := ""
	if replicas > 1 {
		// Replicas share an existing root (upstream disk); each keeps its
		// own signing keys (data_dir, instance_id).
		root, key := filepath.Join(dir, "root.crt"), filepath.Join(dir, "root.key")
		out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
			"-keyout", key, "-out", root, "-days", "2", "-subj", "/CN=push bench root",
			"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
		upstream = fmt.Sprintf("upstream:\n  type: disk\n  cert_file: %s\n  key_file: %s\n", root, key)
	}
	for i := range replicas {
		addr := e2e.FreeAddr(t)
		admin := filepath.Join(dir, fmt.Sprintf("admin-%d.sock", i))
		store := "store:\n  type: sqlite\n"
		if dsn != "" {
			store = fmt.Sprintf("store:\n  type: postgres\n  dsn: %q\ninstance_id: replica-%d\n", dsn, i)
		}
		cfg := filepath.Join(dir, fmt.Sprintf("ca-%d.yaml", i))
		e2e.WriteFile(t, cfg, fmt.Sprintf("trust_domain: %s\ndata_dir: %s\nserver_address: %s\nadmin_socket: %s\n%s%s",
			td, filepath.Join(dir, fmt.Sprintf("ca-%d", i)), addr, admin, store, upstream), 0o600)
		p := sigil.Start(t, "ca", "run", "--config", cfg)
		e2e.WaitForSocket(t, p, admin, 60*time.Second)
		addrs = append(addrs, addr)
		b.admins = append(b.admins, admin)
	}
	b.write = b.admins[len(b.admins)-1]
	tok := strings.TrimSpace(sigil.MustRun(t, "token", "create", "--admin-socket", b.admins[0]))
	b.agentID = "spiffe://" + td + "/sigil/agent/join_token/" + tok
	e2e.WriteFile(t, filepath.Join(dir, "bundle.pem"), sigil.MustRun(t, "bundle", "show", "--format", "pem", "--admin-socket", b.admins[0]), 0o644)
	sock := filepath.Join(dir, "agent.sock")
	agentCfg := filepath.Join(dir, "agent.yaml")
	e2e.WriteFile(t, agentCfg, fmt.Sprintf("trust_domain: %s\nserver_address: %s\ndata_dir: %s\nsocket_path: %s\ntrust_bundle_file: %s\njoin_token: %s\n",
		td, addrs[0], filepath.Join(dir, "agent"), sock, filepath.Join(dir, "bundle.pem"), tok), 0o600)
	agent := sigil.Start(t, "agent", "run", "--config", agentCfg)
	e2e.WaitForSocket(t, agent, sock, 60*time.Second)
	b.createOne(t, "spiffe://"+td+"/push/base")

	b.w = &watcher{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(ctx, b.w) }()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	b.w.waitFor(t, "spiffe://"+td+"/push/base", 60*time.Second)
	return b
}

func (b *bench) admin(t *testing.T, sock string) adminv1.AdminClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminClient(conn)
}

// createOne creates an entry for uid 0 under the agent.
func (b *bench) createOne(t *testing.T, id string) {
	t.Helper()
	b.sigil.MustRun(t, "entry", "create", "--spiffe-id", id, "--parent-id", b.agentID, "--selector", "unix:uid:0", "--admin-socket", b.write)
}

// background writes n entries under 1,000 other agents to a file and
// creates them with one `sigil entry create --file`, which it times.
func (b *bench) background(t *testing.T, prefix string, n int) time.Duration {
	t.Helper()
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "- spiffe_id: spiffe://%s/%s/%d\n  parent_id: spiffe://%s/sigil/agent/join_token/other-%d\n  selectors: [unix:uid:%d]\n",
			td, prefix, i, td, i%1000, 1000+i%5000)
	}
	file := filepath.Join(b.dir, prefix+".yaml")
	e2e.WriteFile(t, file, sb.String(), 0o600)
	// Not MustRun: its 60 s bound is too short for 100,000 entries on a
	// loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	raw, err := exec.CommandContext(ctx, b.sigil.Path, "entry", "create", "--file", file, "--admin-socket", b.write).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("sigil entry create --file (%d entries): %v\n%s", n, err, raw)
	}
	out := string(raw)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	t.Logf("sigil entry create --file (%d entries): %s — %s", n, took.Round(time.Millisecond), lines[len(lines)-1])
	return took
}

// propagation creates samples entries for uid 0 through the admin API and
// times each until the go-spiffe watcher holds its SVID.
func (b *bench) propagation(t *testing.T, label string) {
	t.Helper()
	c := b.admin(t, b.write)
	measure(t, b.w, label, "admin call", samples, nil, func(id string) error {
		_, err := c.CreateEntries(t.Context(), &adminv1.CreateEntriesRequest{Entries: []*typesv1.Entry{{
			SpiffeId: id, ParentId: b.agentID, Selectors: []string{"unix:uid:0"},
		}}})
		return err
	})
}

// measure times n entry creations, each from the start of create(id) until
// w holds an SVID for id, and logs p50, p99 and max of the latency and of
// create alone (named call). Before each sample it sleeps pause() if pause
// is not nil (not timed). Sample -1, the first change after a bulk create
// or a start, is logged apart and not counted.
func measure(t *testing.T, w *watcher, label, call string, n int, pause func() time.Duration, create func(id string) error) {
	t.Helper()
	var lat, writes []time.Duration
	for i := -1; i < n; i++ {
		if pause != nil {
			time.Sleep(pause())
		}
		id := fmt.Sprintf("spiffe://%s/push/%s/%d", td, label, i)
		start := time.Now()
		if err := create(id); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		wrote := time.Since(start)
		at := w.waitFor(t, id, 60*time.Second)
		if i < 0 {
			t.Logf("first entry change, %s: %s (%s %s)", label, at.Sub(start).Round(100*time.Microsecond), call, wrote.Round(100*time.Microsecond))
			continue
		}
		lat = append(lat, at.Sub(start))
		writes = append(writes, wrote)
	}
	slices.Sort(lat)
	slices.Sort(writes)
	q := func(d []time.Duration, p float64) time.Duration {
		return d[min(len(d)-1, int(p*float64(len(d))))].Round(100 * time.Microsecond)
	}
	t.Logf("entry change → go-spiffe update, %s: p50 %s, p99 %s, max %s (%d samples); of which the %s: p50 %s, p99 %s",
		label, q(lat, 0.50), q(lat, 0.99), lat[len(lat)-1].Round(100*time.Microsecond), len(lat), call, q(writes, 0.50), q(writes, 0.99))
}

func TestPushSQLite(t *testing.T) {
	b := start(t, "", 1)
	b.background(t, "bg1k", 1000)
	b.propagation(t, "sqlite-1000")
	b.background(t, "bulk10k", 10_000)
	if n := total(t); n > 11_000 {
		b.background(t, "bg-rest", n-11_000)
		b.propagation(t, fmt.Sprintf("sqlite-%d", n))
	}
}

func TestPushPostgresTwoReplicas(t *testing.T) {
	b := start(t, pgtest.Start(t), 2)
	b.background(t, "bg1k", 1000)
	b.propagation(t, "postgres-2-replicas-1000")
	b.background(t, "bulk10k", 10_000)
	if n := total(t); n > 11_000 {
		b.background(t, "bg-rest", n-11_000)
		b.propagation(t, fmt.Sprintf("postgres-2-replicas-%d", n))
	}
}

// total is how many entries the second round runs at: SIGIL_PUSH_ENTRIES
// (100000 for the published figures); the test suite's default stops at
// the 10,000-entry file (11,000 entries) to keep hack/test.sh short.
func total(t *testing.T) int {
	v := os.Getenv("SIGIL_PUSH_ENTRIES")
	if v == "" {
		return 11_000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 11_000 || n > 1_000_000 {
		t.Fatalf("SIGIL_PUSH_ENTRIES=%q: want a number from 11000 to 1000000", v)
	}
	return n
}

// watcher records when each SPIFFE ID first reached the go-spiffe client.
type watcher struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	changed chan struct{}
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	now := time.Now()
	w.mu.Lock()
	if w.seen == nil {
		w.seen = map[string]time.Time{}
	}
	for _, s := range c.SVIDs {
		if _, ok := w.seen[s.ID.String()]; !ok {
			w.seen[s.ID.String()] = now
		}
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watcher) OnX509ContextWatchError(error) {}

func (w *watcher) waitFor(t *testing.T, id string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		at, ok := w.seen[id]
		w.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-w.changed:
		case <-deadline:
			t.Fatalf("go-spiffe client never got an SVID for %s", id)
		}
	}
}
