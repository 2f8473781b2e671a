package admin

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca/store"
)

// streamEntries sends n entries in messages of per, with spoil applied to
// entry bad (-1: none), and returns the call's result.
func streamEntries(t *testing.T, e *env, n, per, bad int, spoil func(*typesv1.Entry)) (*adminv1.CreateEntriesStreamResponse, error) {
	t.Helper()
	stream, err := e.client.CreateEntriesStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for start := 0; start < n; start += per {
		req := &adminv1.CreateEntriesStreamRequest{}
		for i := start; i < min(start+per, n); i++ {
			en := &typesv1.Entry{SpiffeId: fmt.Sprintf("spiffe://example.org/bulk/%d", i), ParentId: agentID, Selectors: []string{"unix:uid:1000"}}
			if i == bad {
				spoil(en)
			}
			req.Entries = append(req.Entries, en)
		}
		if err := stream.Send(req); err != nil {
			break // the server ended the call: CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}

func TestCreateEntriesStream(t *testing.T) {
	// 20 messages and 20 INSERTs: a failure at the end rolls back many
	// written chunks. The CLI test streams 100,000 with a bad last entry.
	const n = 20_000
	e := newEnv(t)
	if _, err := e.client.CreateEntries(t.Context(), &adminv1.CreateEntriesRequest{Entries: []*typesv1.Entry{cartEntry()}}); err != nil {
		t.Fatal(err)
	}
	rev, err := e.store.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nothingWritten := func(t *testing.T) {
		t.Helper()
		if got, _ := e.store.Revision(t.Context()); got != rev {
			t.Fatalf("revision %d after a failed stream, want %d", got, rev)
		}
		if all, _ := e.store.ListEntries(t.Context(), store.EntryFilter{Limit: 2}); len(all) != 1 {
			t.Fatalf("%d entries after a failed stream, want 1", len(all))
		}
	}
	failures := []struct {
		name  string
		n     int
		per   int
		bad   int
		spoil func(*typesv1.Entry)
		code  codes.Code
		parts []string
	}{
		{"bad selector at the end", n, MaxBatch, n - 2, func(en *typesv1.Entry) { en.Selectors = []string{"nope"} },
			codes.InvalidArgument, []string{fmt.Sprintf("entries[%d]", n-2) + ".selectors"}},
		{"duplicate of a stored entry at the end", n, MaxBatch, n - 2, func(en *typesv1.Entry) { en.SpiffeId, en.Selectors = cartID, cartEntry().Selectors },
			codes.AlreadyExists, []string{fmt.Sprintf("entries[%d]", n-2), cartID, "nothing was created"}},
		{"duplicate within the stream", 3000, MaxBatch, 2999, func(en *typesv1.Entry) { en.SpiffeId = "spiffe://example.org/bulk/5" },
			codes.AlreadyExists, []string{"entries[2999]", "nothing was created"}},
		{"id set", 10, 5, 7, func(en *typesv1.Entry) { en.Id = "x" }, codes.InvalidArgument, []string{"entries[7].id"}},
		{"message over the cap", MaxBatch + 1, MaxBatch + 1, -1, nil, codes.InvalidArgument, []string{"at most 1000 entries per message"}},
		{"empty", 0, 1, -1, nil, codes.InvalidArgument, []string{"at least one entry"}},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			_, err := streamEntries(t, e, tt.n, tt.per, tt.bad, tt.spoil)
			wantCode(t, err, tt.code, tt.parts...)
			nothingWritten(t)
		})
	}
	t.Run("all of them", func(t *testing.T) {
		resp, err := streamEntries(t, e, n, MaxBatch, -1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetCreated() != n || resp.GetFirstRevision() != rev+1 || resp.GetLastRevision() != rev+n {
			t.Fatalf("response %v, want %d created at revisions %d..%d", resp, n, rev+1, rev+n)
		}
		all, err := e.store.ListEntries(t.Context(), store.EntryFilter{ParentID: agentID})
		if err != nil || len(all) != n+1 {
			t.Fatalf("%d entries (%v), want %d", len(all), err, n+1)
		}
	})
}
