package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
)

// outputCommands lists every command with -o; TestOutputFormats fails when
// a command gains -o without a case here.
func outputCommands(cmd *cobra.Command) []string {
	var out []string
	if cmd.Flags().Lookup("output") != nil {
		out = append(out, strings.TrimPrefix(cmd.CommandPath(), "sigil "))
	}
	for _, c := range cmd.Commands() {
		out = append(out, outputCommands(c)...)
	}
	return out
}

// TestOutputFormats runs every command that prints data with -o table,
// json and yaml against real servers: json and yaml must carry the same
// data, enums in lower case; table must be text for people.
func TestOutputFormats(t *testing.T) {
	ctx := context.Background()
	t.Setenv("HOME", t.TempDir())
	// The admin API on a real SQLite store, with one entry and our bundle.
	e := startAdmin(t)
	adm := []string{"--admin-socket", e.socket}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	own := testca.New(t, td)
	if err := e.store.SetBundle(ctx, "ca", store.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{own.Roots()[0].Raw}, RefreshHint: 5 * time.Minute, Sequence: 3}); err != nil {
		t.Fatal(err)
	}
	sels, _ := selector.ParseAll([]string{"unix:uid:1000"})
	if _, err := e.store.CreateFederation(ctx, "test", store.FederationRelationship{TrustDomain: "partner.test", BundleEndpointURL: "https://partner.test/", Profile: "https_web"}); err != nil {
		t.Fatal(err)
	}
	ents, err := e.store.CreateEntries(ctx, "test", []store.Entry{{SPIFFEID: cliCart, ParentID: cliParent, Selectors: sels}})
	if err != nil {
		t.Fatal(err)
	}
	// The Workload API with an identity for this uid.
	sock, src, wca := startWorkloadAPI(t)
	src.Put(workloadtest.Entry{ID: "me", Selectors: []selector.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}}, SVID: wca.Issue(t, "spiffe://example.org/me")})
	wl := []string{"--socket", sock}
	jwtOut, _, err := run(t, "", append([]string{"jwt", "fetch", "--audience", "db"}, wl...)...)
	if err != nil {
		t.Fatalf("jwt fetch: %v", err)
	}
	token := strings.TrimSpace(jwtOut)
	// A signed decision log and a candidate policy.
	dir := t.TempDir()
	logPath, bundlePath := writeSignedLog(t, dir)
	cand := filepath.Join(dir, "cand")
	os.Mkdir(cand, 0o755)
	os.WriteFile(filepath.Join(cand, "p.rego"), []byte("package envoy.authz\n\ndefault allow := false\n"), 0o644)
	input := filepath.Join(dir, "check.json")
	os.WriteFile(input, []byte(`{"attributes":{"request":{"http":{"method":"GET","path":"/x"}}}}`), 0o644)

	// sigil dev's authz, with its seeded policy.
	alis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	asvc, err := devAuthz(t.TempDir(), td, alis, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- asvc.Run(actx) }()
	defer func() { acancel(); <-adone }()

	cases := map[string][]string{
		"authz check": {"--authz-address", alis.Addr().String(), "--source", "spiffe://example.org/ns/shop/sa/frontend",
			"--destination", "spiffe://example.org/ns/shop/sa/cart", "--path", "/items/7"},
		"agent list":      adm,
		"bundle list":     adm,
		"bundle show":     adm,
		"federation list": adm,
		"federation show": append([]string{"--trust-domain", "partner.test"}, adm...),
		"ca status":       adm,
		"ca root rotate":  adm,
		"entry create":    append([]string{"--spiffe-id", "spiffe://example.org/fmt", "--parent-id", cliParent, "--selector", "unix:uid:7"}, adm...),
		"entry list":      adm,
		"entry show":      append([]string{ents[0].ID}, adm...),
		"entry update":    append([]string{ents[0].ID, "--x509-ttl", "2h"}, adm...),
		"token create":    adm,
		"svid fetch":      wl,
		"jwt fetch":       append([]string{"--audience", "db"}, wl...),
		"jwt validate":    append([]string{token, "--audience", "db"}, wl...),
		"audit verify":    {"--bundle", bundlePath, logPath},
		"policy eval":     {"--policy", cand, "--input", input},
		"policy replay":   {"--log", logPath, "--policy", cand},
		"explain":         {"--policy", cand, "--source", "spiffe://example.org/a", "--destination", "spiffe://example.org/b"},
		"version":         nil,
	}
	have := outputCommands(newRootCmd())
	slices.Sort(have)
	var want []string
	for k := range cases {
		want = append(want, k)
	}
	slices.Sort(want)
	if !slices.Equal(have, want) {
		t.Fatalf("commands with -o: %v\nthis test covers: %v", have, want)
	}

	for _, name := range want {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			var data [2]any
			for _, format := range []string{outTable, outJSON, outYAML} {
				args := append(append(strings.Fields(name), cases[name]...), "-o", format)
				if name == "entry create" {
					args[slices.Index(args, "spiffe://example.org/fmt")] = "spiffe://example.org/fmt/" + format
				}
				out, _, err := run(t, "", args...)
				if name == "policy eval" && err != nil && strings.Contains(err.Error(), "denied") {
					err = nil // the candidate denies: still printed
				}
				if err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				if strings.TrimSpace(out) == "" {
					t.Fatalf("%v printed nothing", args)
				}
				switch format {
				case outTable:
					if json.Valid([]byte(out)) {
						t.Fatalf("%v printed JSON, want text:\n%s", args, out)
					}
				case outJSON:
					if err := json.Unmarshal([]byte(out), &data[0]); err != nil {
						t.Fatalf("%v: not JSON: %v\n%s", args, err, out)
					}
					if strings.Contains(out, "KEY_KIND_") || strings.Contains(out, "KEY_STATE_") {
						t.Fatalf("%v printed an upper-case enum:\n%s", args, out)
					}
				case outYAML:
					if json.Valid([]byte(out)) && !strings.HasPrefix(strings.TrimSpace(out), "{}") {
						t.Fatalf("%v printed JSON, want YAML:\n%s", args, out)
					}
					var y any
					if err := yaml.Unmarshal([]byte(out), &y); err != nil {
						t.Fatalf("%v: not YAML: %v\n%s", args, err, out)
					}
					data[1] = y
				}
			}
			j, y := normalize(data[0]), normalize(data[1])
			switch name {
			case "entry create", "entry update", "token create", "jwt fetch", "ca status", "authz check":
				// Each run makes a new entry, revision, token or JWT (the
				// test authority a new upstream root): compare keys only.
				j, y = keysOf(j), keysOf(y)
			}
			if !reflect.DeepEqual(j, y) {
				t.Fatalf("json and yaml differ:\njson %v\nyaml %v", j, y)
			}
		})
	}

	// A bad format is a usage error everywhere.
	for _, name := range want {
		args := append(append(strings.Fields(name), cases[name]...), "-o", "xml")
		if _, _, err := run(t, "", args...); exitCode(err) != exitUsage {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// normalize makes JSON- and YAML-decoded trees comparable: numbers as
// float64, maps as map[string]any, times as their RFC 3339 text.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range t {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = normalize(e)
		}
		return out
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	case time.Time:
		return t.Format(time.RFC3339Nano)
	}
	return v
}

// keysOf replaces every leaf by nil, keeping the shape.
func keysOf(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range t {
			out[k] = keysOf(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = keysOf(e)
		}
		return out
	}
	return nil
}

// writeSignedLog writes a decision log of three decisions with signed
// checkpoints, and the bundle the signer chains to.
func writeSignedLog(t *testing.T, dir string) (logPath, bundlePath string) {
	t.Helper()
	ca := testca.New(t, spiffeid.RequireTrustDomainFromString("example.org"))
	svid := ca.Issue(t, "spiffe://example.org/sigil/authz")
	bundlePath = ca.WritePEM(t, t.TempDir()).Roots
	logPath = filepath.Join(dir, "decisions.log")
	l, err := decisionlog.New(decisionlog.Config{
		Sinks: []decisionlog.Sink{decisionlog.NewFileSink(logPath, 0, 0)},
		Checkpoint: decisionlog.CheckpointConfig{
			Sink: decisionlog.NewFileSink(logPath+".checkpoints", 0, 0), Identity: decisionlog.StaticIdentity(svid.PrivateKey, svid.Certificates), Every: 3,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for i := range 3 {
		if err := l.Log(context.Background(), decisionlog.Entry{DecisionID: fmt.Sprint("d", i), Time: time.Unix(int64(i), 0).UTC(), Result: "allow", Reason: "allowed"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return logPath, bundlePath
}

// TestLogFlags checks that --log-level and --log-format reach the loggers
// of the run commands, from the flag and from the environment.
func TestLogFlags(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantJSON bool
		wantDbg  bool
	}{
		{name: "default", args: nil},
		{name: "json debug", args: []string{"--log-format", "json", "--log-level", "debug"}, wantJSON: true, wantDbg: true},
		{name: "env", env: map[string]string{"SIGIL_LOG_FORMAT": "json"}, wantJSON: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			root := newRootCmd()
			var logs strings.Builder
			root.SetErr(&logs)
			root.SetOut(&strings.Builder{})
			root.SetArgs(append([]string{"version"}, tc.args...))
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			sub, _, err := root.Find([]string{"version"})
			if err != nil {
				t.Fatal(err)
			}
			l := newLogger(sub)
			l.Debug("dbg")
			l.Info("hello", "k", "v")
			out := logs.String()
			if got := strings.Contains(out, "dbg"); got != tc.wantDbg {
				t.Errorf("debug line logged = %v, want %v:\n%s", got, tc.wantDbg, out)
			}
			first := strings.SplitN(out, "\n", 2)[0]
			if got := json.Valid([]byte(first)); got != tc.wantJSON {
				t.Errorf("JSON lines = %v, want %v:\n%s", got, tc.wantJSON, out)
			}
		})
	}
}
