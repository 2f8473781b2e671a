package push

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

const (
	// spireSmokeEntries and spireSmokeSamples are the size of a run without
	// SIGIL_PUSH_ENTRIES, where every sample costs SPIRE's seconds.
	spireSmokeEntries = 200
	spireSmokeSamples = 3
)

// spireSetup is one way to configure SPIRE: its defaults, or intervals
// tuned for propagation.
type spireSetup struct {
	name string
	// server and agent are HCL put inside the server and agent blocks.
	server, agent string
	// interval is the agent's sync interval: each sample starts after a
	// random pause below it, so that samples do not all start just after a
	// sync (the previous sample's update arrived with one).
	interval time.Duration
}

// spireSetups are the setups TestPushSPIRE measures.
func spireSetups() []spireSetup {
	return []spireSetup{
		// SPIRE v1.14.5's defaults (pkg/server/endpoints/endpoints.go,
		// pkg/agent/manager): the server rebuilds its whole entry cache from
		// the datastore 5 s after the last one ended (cache_reload_interval, events_based_cache
		// false); the agent syncs every 5 s (sync_interval, ±10% jitter).
		{name: "defaults", interval: 5 * time.Second},
		// Tuned for propagation: the events-based cache reads only changed
		// entries, every second; the agent syncs every second.
		{name: "tuned", interval: time.Second,
			server: "experimental {\n        events_based_cache = true\n        cache_reload_interval = \"1s\"\n    }",
			agent:  "experimental {\n        sync_interval = \"1s\"\n    }"},
	}
}

// TestPushSPIRE measures the same thing as TestPushSQLite against a real
// spire-server (on PostgreSQL) and spire-agent v1.14.5: from the start of
// the BatchCreateEntry call that creates an entry for this process's uid to
// the go-spiffe update carrying its SVID on the agent's Workload API. Each
// case is a fresh server whose background entries are written into its
// PostgreSQL schema while it is stopped (see README.md); the measured
// entries go through its API. Without SIGIL_PUSH_ENTRIES it runs one small
// case per setup (200 entries, 3 samples); with it, 1,000 and that many
// entries, 40 samples each.
func TestPushSPIRE(t *testing.T) {
	server, agent := e2e.SPIRETool(t, "spire-server"), e2e.SPIRETool(t, "spire-agent")
	sizes, n := []int{spireSmokeEntries}, spireSmokeSamples
	if os.Getenv("SIGIL_PUSH_ENTRIES") != "" {
		sizes, n = []int{1000, total(t)}, samples
	}
	for _, s := range spireSetups() {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%s/%d", s.name, size), func(t *testing.T) {
				p := startSPIRE(t, server, agent, s, size)
				label := fmt.Sprintf("spire-%s-%d", s.name, size)
				start, server0, agent0 := time.Now(), procCPU(t, p.server), procCPU(t, p.agent)
				measure(t, p.w, label, "BatchCreateEntry call", n,
					func() time.Duration { return rand.N(s.interval) }, p.create)
				wall := time.Since(start)
				server1, agent1 := procCPU(t, p.server), procCPU(t, p.agent)
				t.Logf("CPU while sampling, %s: spire-server %s, spire-agent %s in %s (%.3f and %.3f cores)", label,
					(server1 - server0).Round(time.Millisecond), (agent1 - agent0).Round(time.Millisecond), wall.Round(time.Millisecond),
					(server1-server0).Seconds()/wall.Seconds(), (agent1-agent0).Seconds()/wall.Seconds())
			})
		}
	}
}

// spire is a running spire-server and spire-agent with a go-spiffe
// watcher on the agent.
type spire struct {
	server  *e2e.Proc
	agent   *e2e.Proc
	conn    *grpc.ClientConn
	agentID string
	uid     string
	w       *watcher
}

// startSPIRE starts a spire-server on a fresh database, stops it once it
// has made its schema and a join token, writes background entries plus one
// entry for this process under the agent into its tables, starts it again,
// checks it counts them all, then starts an agent with that token and a
// go-spiffe watcher that waits for the SVID of that written entry.
func startSPIRE(t *testing.T, serverPath, agentPath string, s spireSetup, background int) *spire {
	t.Helper()
	dir := t.TempDir()
	dsn := pgtest.Start(t)
	srv := &e2e.Binary{Path: serverPath}
	sock := filepath.Join(dir, "server.sock")
	addr := e2e.FreeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cfg := filepath.Join(dir, "server.conf")
	e2e.WriteFile(t, cfg, fmt.Sprintf(`server {
    bind_address = %q
    bind_port = %q
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = "WARN"
    %s
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "postgres"
            connection_string = %q
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`, host, port, sock, td, filepath.Join(dir, "server"), s.server, dsn), 0o600)
	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := srv.Run(t, append(args, "-socketPath", sock)...)
		if err != nil {
			t.Fatalf("spire-server %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	startServer := func() *e2e.Proc {
		t.Helper()
		p := srv.Start(t, "run", "-config", cfg)
		e2e.WaitForSocket(t, p, sock, 60*time.Second)
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, _, err := srv.Run(t, "healthcheck", "-socketPath", sock)
			if err == nil {
				return p
			}
			if time.Now().After(deadline) || p.Exited() {
				t.Fatalf("spire-server not healthy: %v\n%s", err, p.Output())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	p := startServer()
	m := regexp.MustCompile(`(?m)^Token: (\S+)$`).FindStringSubmatch(run("token", "generate"))
	if m == nil {
		t.Fatal("spire-server token generate printed no token")
	}
	sp := &spire{agentID: "spiffe://" + td + "/spire/agent/join_token/" + m[1], uid: fmt.Sprint(os.Getuid())}
	if _, err := p.Interrupt(t, 60*time.Second); err != nil {
		t.Logf("spire-server stopped: %v", err)
	}
	start := time.Now()
	base := "spiffe://" + td + "/push/spire-base"
	if err := writeSPIREEntries(t.Context(), dsn, background, sp.agentID, base, sp.uid); err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(start)
	start = time.Now()
	srvProc := startServer()
	t.Logf("%d background entries written into spire-server's tables in %s; spire-server healthy again %s later",
		background, wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if out, want := run("entry", "count"), fmt.Sprintf("%d registration entries", background+1); !strings.Contains(out, want) {
		t.Fatalf("spire-server entry count printed %q, want %q", out, want)
	}

	bundle := filepath.Join(dir, "bundle.pem")
	e2e.WriteFile(t, bundle, run("bundle", "show"), 0o644)
	agentSock := filepath.Join(dir, "agent.sock")
	agentCfg := filepath.Join(dir, "agent.conf")
	e2e.WriteFile(t, agentCfg, fmt.Sprintf(`agent {
    data_dir = %q
    log_level = "WARN"
    server_address = %q
    server_port = %q
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
    join_token = %q
    %s
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, filepath.Join(dir, "agent"), host, port, agentSock, bundle, td, m[1], s.agent), 0o600)
	a := (&e2e.Binary{Path: agentPath}).Start(t, "run", "-config", agentCfg)
	e2e.WaitForSocket(t, a, agentSock, 60*time.Second)
	// Both log at WARN: what they logged at error level is shown.
	t.Cleanup(func() {
		for name, p := range map[string]*e2e.Proc{"spire-server": srvProc, "spire-agent": a} {
			for _, line := range strings.Split(p.Output(), "\n") {
				if strings.Contains(line, "level=error") {
					t.Logf("%s: %s", name, line)
				}
			}
		}
	})

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sp.conn, sp.server, sp.agent = conn, srvProc, a

	sp.w = &watcher{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+agentSock))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.WatchX509Context(ctx, sp.w) }()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	sp.w.waitFor(t, base, 60*time.Second)
	return sp
}

// writeSPIREEntries inserts n background entries (spiffe://td/bg/I under
// 1,000 other agents, one unix:uid selector each, as in the Sigil cases)
// and base, for uid under agentID, into spire-server v1.14.5's
// registered_entries and selectors tables, in one transaction, with the
// values its createRegistrationEntry gives an entry without TTLs, hint,
// DNS names or federation. The server must be stopped: at start both of its
// entry caches (full and events-based) read every entry; the events-based
// one would not see rows written later without an event row.
func writeSPIREEntries(ctx context.Context, dsn string, n int, agentID, base, uid string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to spire-server's database: %w", err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	// $1 rows; row i gets SPIFFE ID $2, parent $3 and selector unix:$4,
	// numbered if $5: $2||i, $3||(i % 1000), $4||(1000 + id % 5000), where
	// id is the row's serial, which the selector row refers to.
	const insert = `WITH e AS (
	INSERT INTO registered_entries
		(created_at, updated_at, entry_id, spiffe_id, parent_id, ttl, admin, downstream, expiry, revision_number, store_svid, hint, jwt_svid_ttl)
	SELECT now(), now(), gen_random_uuid()::text, $2 || CASE WHEN $5::bool THEN i::text ELSE '' END,
		$3 || CASE WHEN $5::bool THEN (i % 1000)::text ELSE '' END, 0, false, false, 0, 0, false, '', 0
	FROM generate_series(0, $1::int - 1) AS i
	RETURNING id)
INSERT INTO selectors (created_at, updated_at, registered_entry_id, type, value)
SELECT now(), now(), id, 'unix', $4 || CASE WHEN $5::bool THEN (1000 + id % 5000)::text ELSE '' END FROM e`
	if n > 0 {
		if _, err := tx.Exec(ctx, insert, n, "spiffe://"+td+"/bg/", "spiffe://"+td+"/spire/agent/join_token/other-", "uid:", true); err != nil {
			return fmt.Errorf("write %d entries into spire-server's tables: %w", n, err)
		}
	}
	if _, err := tx.Exec(ctx, insert, 1, base, agentID, "uid:"+uid, false); err != nil {
		return fmt.Errorf("write %s into spire-server's tables: %w", base, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// create creates one entry for this process's uid under the agent with
// SPIRE's BatchCreateEntry.
func (s *spire) create(id string) error {
	path, ok := strings.CutPrefix(id, "spiffe://"+td)
	if !ok {
		return fmt.Errorf("%s is not in %s", id, td)
	}
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, entryMessage(path, strings.TrimPrefix(s.agentID, "spiffe://"+td), "uid:"+s.uid))
	var resp []byte
	if err := s.conn.Invoke(context.Background(), "/spire.api.server.entry.v1.Entry/BatchCreateEntry", &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		return fmt.Errorf("BatchCreateEntry: %w", err)
	}
	return batchResult(resp)
}

// entryMessage encodes a spire.api.types.Entry (SPIRE's API protos: field
// 2 spiffe_id and 3 parent_id are SPIFFEID{1 trust_domain, 2 path}, 4 is
// repeated Selector{1 type, 2 value}) with one unix selector.
func entryMessage(path, parentPath, selector string) []byte {
	id := func(p string) []byte {
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		b = protowire.AppendString(b, td)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		return protowire.AppendString(b, p)
	}
	sel := protowire.AppendTag(nil, 1, protowire.BytesType)
	sel = protowire.AppendString(sel, "unix")
	sel = protowire.AppendTag(sel, 2, protowire.BytesType)
	sel = protowire.AppendString(sel, selector)
	e := protowire.AppendTag(nil, 2, protowire.BytesType)
	e = protowire.AppendBytes(e, id(path))
	e = protowire.AppendTag(e, 3, protowire.BytesType)
	e = protowire.AppendBytes(e, id(parentPath))
	e = protowire.AppendTag(e, 4, protowire.BytesType)
	return protowire.AppendBytes(e, sel)
}

// batchResult reads a BatchCreateEntryResponse (1: repeated Result{1:
// Status{1 code, 2 message}, 2: Entry}) that must hold one result with
// code 0.
func batchResult(b []byte) error {
	var results []error
	err := fields(b, func(num protowire.Number, v []byte) error {
		if num != 1 {
			return nil
		}
		var code uint64
		var msg string
		err := fields(v, func(num protowire.Number, v []byte) error {
			if num != 1 {
				return nil
			}
			return fields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					c, n := protowire.ConsumeVarint(v)
					if n < 0 {
						return protowire.ParseError(n)
					}
					code = c
				case 2:
					msg = string(v)
				}
				return nil
			})
		})
		if err == nil && code != 0 {
			err = fmt.Errorf("code %d: %s", code, msg)
		}
		results = append(results, err)
		return nil
	})
	if err != nil {
		return fmt.Errorf("BatchCreateEntry response: %w", err)
	}
	if len(results) != 1 {
		return fmt.Errorf("BatchCreateEntry answered %d results for one entry", len(results))
	}
	return results[0]
}

// fields calls f with each field of a protobuf message: the bytes of a
// length-delimited field, the encoded value of a varint.
func fields(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.BytesType:
			s, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			v, n = s, m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			v = b[:n]
		}
		if err := f(num, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// rawCodec passes already encoded protobuf messages (*[]byte) through gRPC:
// this module does not depend on SPIRE's API SDK.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T is not *[]byte", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: %T is not *[]byte", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// procCPU is the CPU time a process (all its threads) has used so far:
// utime + stime from /proc/PID/stat.
func procCPU(t *testing.T, p *e2e.Proc) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces: count from its ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", p.Pid(), b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", p.Pid(), b)
	}
	const userHZ = 100 // the unit of utime and stime on Linux
	return time.Duration(utime+stime) * time.Second / userHZ
}
