package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sigilhq/sigil/agent"
)

// Evicting or banning an agent on a quiet system (no other change in the
// store) ends its workloads' Workload API streams within seconds: the CA
// ends the agent's Sync stream, the agent learns it was refused, cannot
// attest again with its used join token, and stops serving. The time from
// the store change to the workload's stream ending is logged, not asserted.
func TestEvictAndBanEndWorkloadStreams(t *testing.T) {
	tests := []struct {
		name   string
		remove func(tc *testCA, id string) error
	}{
		{"evict", func(tc *testCA, id string) error { return tc.store.DeleteAgent(context.Background(), "test", id) }},
		{"ban", func(tc *testCA, id string) error {
			rec, err := tc.store.GetAgent(context.Background(), id)
			if err != nil {
				return err
			}
			rec.Banned, rec.Serial = true, ""
			_, err = tc.store.UpdateAgent(context.Background(), "test", rec)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Agent SVIDs live an hour: no renewal happens to notice.
			tc := newTestCAWith(t, time.Hour, time.Hour)
			tok := tc.token(t)
			agentID := "spiffe://example.org/sigil/agent/join_token/" + tok
			tc.entry(t, agentID, "spiffe://example.org/me", fmt.Sprintf("unix:uid:%d", os.Getuid()))
			sock := filepath.Join(t.TempDir(), "agent.sock")
			_, _, _, errc := runAgent(t, tc, filepath.Join(t.TempDir(), "agent"), tok, serveSocket(t, sock))
			waitSocket(t, sock)

			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := metadata.AppendToOutgoingContext(t.Context(), "workload.spiffe.io", "true")
			var stream grpc.ServerStreamingClient[workloadpb.X509SVIDResponse]
			deadline := time.Now().Add(30 * time.Second)
			for {
				stream, err = workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
				if err == nil {
					var resp *workloadpb.X509SVIDResponse
					if resp, err = stream.Recv(); err == nil && len(resp.GetSvids()) == 1 {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no SVID over the socket: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}

			start := time.Now()
			if err := tt.remove(tc, agentID); err != nil {
				t.Fatal(err)
			}
			ended := make(chan error, 1)
			go func() {
				for {
					if _, err := stream.Recv(); err != nil {
						ended <- err
						return
					}
				}
			}()
			select {
			case err := <-ended:
				t.Logf("%s: workload SVID stream ended %s after the store change: %v", tt.name, time.Since(start), err)
			case <-time.After(20 * time.Second):
				t.Fatalf("the workload still has its SVID stream 20s after the %s", tt.name)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, agent.ErrTokenUsed) {
					t.Fatalf("agent Run = %v, want ErrTokenUsed", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the agent kept running")
			}
		})
	}
}
