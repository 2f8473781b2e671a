package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestTinyFleet runs the simulator at tiny scale, on SQLite and on two
// PostgreSQL replicas, so that it cannot rot: every change reaches its
// agent, the CA rotation reaches every agent, every agent renews and ends
// holding exactly what the store says, and nothing fails.
func TestTinyFleet(t *testing.T) {
	sigil, err := e2e.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		replicas int
		postgres bool
	}{
		{"sqlite", 1, false},
		{"postgres-2-replicas", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Sigil: sigil.Path, Dir: t.TempDir(), Replicas: tc.replicas, Agents: 5, Entries: 50,
				Churn: 20, Duration: 6 * time.Second, SVIDTTL: 8 * time.Second, Rotate: true, RenewEvery: time.Second, ReadyWithin: 2 * time.Minute}
			if tc.postgres {
				cfg.PostgresDSN = pgtest.Start(t)
			} else {
				cfg.ProfileDir = t.TempDir()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			rep, err := Run(ctx, cfg, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			rep.Print(&out)
			t.Log(out.String())
			if rep.Inconsistent != 0 || rep.LagMissed != 0 || len(rep.Errors) != 0 {
				t.Errorf("inconsistent agents %d, changes never seen %d, errors %v", rep.Inconsistent, rep.LagMissed, rep.Errors)
			}
			// ~120 writes on a quiet machine; a loaded one (load 13 on 2
			// cores) managed 17, each admin call taking ~350 ms.
			if rep.Writes < 10 || rep.LagSamples < rep.Writes/2 {
				t.Errorf("%d changes seen of %d writes: want at least 10 writes, most of them seen", rep.LagSamples, rep.Writes)
			}
			if rep.RotationSeen != cfg.Agents || rep.Renewed != cfg.Agents {
				t.Errorf("rotation seen by %d agents, %d renewed: want all %d", rep.RotationSeen, rep.Renewed, cfg.Agents)
			}
			if rep.SignRate <= 0 || len(rep.CA) != tc.replicas || rep.CA[0].RSS == 0 {
				t.Errorf("sign rate %.1f, CA usage %+v: want signings and one sample per replica", rep.SignRate, rep.CA)
			}
			if rep.Fanout == nil || rep.Fanout.Agents != cfg.Agents || len(rep.Fanout.CPU) != tc.replicas {
				t.Errorf("bundle fan-out %+v: want every agent and one CPU figure per replica", rep.Fanout)
			}
			for _, c := range rep.CA {
				if c.ReadyGo.HeapInuse <= 0 || c.EndGo.Goroutines <= 0 {
					t.Errorf("%s: Go's account %+v at ready, %+v at the end: want a heap and goroutines", c.Name, c.ReadyGo, c.EndGo)
				}
			}
			if cfg.ProfileDir != "" {
				// ready and end heap and allocs, the measured phase's CPU
				if len(rep.Profiles) != 5 {
					t.Errorf("profiles %v, want 5", rep.Profiles)
				}
				for _, p := range rep.Profiles {
					if st, err := os.Stat(p); err != nil || st.Size() == 0 {
						t.Errorf("profile %s: %v", p, err)
					}
				}
			}
		})
	}
}

// TestAgentRSS runs --agent-rss at tiny scale so that it cannot rot: a
// real agent holds every SVID, and its RSS, Go's account of its heap and
// its heap profile are read.
func TestAgentRSS(t *testing.T) {
	sigil, err := e2e.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	heapDir := t.TempDir()
	res, err := MeasureAgentRSS(ctx, sigil.Path, t.TempDir(), heapDir, []int{0, 30}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("%d results, want 2", len(res))
	}
	for _, r := range res {
		if r.RSS <= 0 || r.Anon <= 0 || r.Anon > r.RSS || r.HeapInuse <= 0 {
			t.Errorf("%d SVIDs: RSS %d, anonymous %d, heap in use %d: want 0 < anonymous <= RSS and a heap", r.SVIDs, r.RSS, r.Anon, r.HeapInuse)
		}
		st, err := os.Stat(filepath.Join(heapDir, fmt.Sprintf("agent-%d.heap", r.SVIDs)))
		if err != nil || st.Size() == 0 {
			t.Errorf("heap profile of the agent with %d SVIDs: %v", r.SVIDs, err)
		}
	}
}
