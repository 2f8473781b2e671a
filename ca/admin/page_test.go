package admin

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

func seedEntries(t *testing.T, e *env, n int, parent string) []string {
	t.Helper()
	var ids []string
	for start := 0; start < n; start += 1000 {
		var es []store.Entry
		for i := start; i < min(start+1000, n); i++ {
			es = append(es, store.Entry{
				SPIFFEID:  fmt.Sprintf("spiffe://example.org/w/%d", i),
				ParentID:  parent,
				Selectors: []selector.Selector{{Type: "unix", Value: "uid:1000"}},
			})
		}
		out, err := e.store.CreateEntries(context.Background(), "test", es)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range out {
			ids = append(ids, x.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// listAll follows the pages of ListEntries.
func listAll(t *testing.T, e *env, req *adminv1.ListEntriesRequest) (ids []string, pages int) {
	t.Helper()
	for {
		resp, err := e.client.ListEntries(context.Background(), req)
		if err != nil {
			t.Fatalf("ListEntries page %d: %v", pages+1, err)
		}
		pages++
		for _, x := range resp.GetEntries() {
			ids = append(ids, x.GetId())
		}
		if resp.GetNextPageToken() == "" {
			return ids, pages
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func TestListEntriesPages(t *testing.T) {
	e := newEnv(t)
	want := seedEntries(t, e, 2500, agentID)
	other := seedEntries(t, e, 3, "spiffe://example.org/sigil/agent/join_token/other")
	for _, tt := range []struct {
		name      string
		req       *adminv1.ListEntriesRequest
		want      []string
		wantPages int
	}{
		{"default size", &adminv1.ListEntriesRequest{ParentId: agentID}, want, 5},
		{"largest size", &adminv1.ListEntriesRequest{ParentId: agentID, PageSize: MaxPageSize}, want, 3},
		{"small pages", &adminv1.ListEntriesRequest{ParentId: agentID, PageSize: 7}, want, 358},
		{"exact fit", &adminv1.ListEntriesRequest{ParentId: "spiffe://example.org/sigil/agent/join_token/other", PageSize: 3}, other, 1},
		{"all", &adminv1.ListEntriesRequest{PageSize: 1000}, slices.Sorted(slices.Values(append(slices.Clone(want), other...))), 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, pages := listAll(t, e, tt.req)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("listed %d entries, want %d (in ID order, each once)", len(got), len(tt.want))
			}
			if pages != tt.wantPages {
				t.Errorf("%d pages, want %d", pages, tt.wantPages)
			}
		})
	}
}

func TestListPagesRefused(t *testing.T) {
	e := newEnv(t)
	seedEntries(t, e, 5, agentID)
	ctx := context.Background()
	first, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageSize: 2})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v; want a next page token", first, err)
	}
	tok := first.GetNextPageToken()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	altered := slices.Clone(raw)
	altered[5] ^= 1
	forged := (&pager{key: []byte("not the key of this ca process!!"), now: func() time.Time { return testNow }}).token("entries", agentID+"\x00", "")

	for _, tt := range []struct {
		name string
		call func() error
		want []string
	}{
		{"page size above the maximum", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{PageSize: MaxPageSize + 1})
			return err
		}, []string{"page_size", "maximum 1000"}},
		{"negative page size", func() error {
			_, err := e.client.ListAgents(ctx, &adminv1.ListAgentsRequest{PageSize: -1})
			return err
		}, []string{"page_size", "negative"}},
		{"bundles page size above the maximum", func() error {
			_, err := e.client.ListBundles(ctx, &adminv1.ListBundlesRequest{PageSize: 5000})
			return err
		}, []string{"page_size", "maximum"}},
		{"audit limit above the maximum", func() error {
			_, err := e.client.ListAudit(ctx, &adminv1.ListAuditRequest{Limit: 5000})
			return err
		}, []string{"limit", "maximum 1000"}},
		{"garbage token", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageToken: "eyJhIjoiMCJ9"})
			return err
		}, []string{"page_token", "not a page token"}},
		{"not base64", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageToken: "!!!"})
			return err
		}, []string{"page_token"}},
		{"altered token", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageToken: base64.RawURLEncoding.EncodeToString(altered)})
			return err
		}, []string{"page_token", "forged, altered"}},
		{"forged token", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageToken: forged})
			return err
		}, []string{"page_token", "forged"}},
		{"other filters", func() error {
			_, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{PageToken: tok})
			return err
		}, []string{"page_token", "same filters"}},
		{"other list", func() error {
			_, err := e.client.ListAgents(ctx, &adminv1.ListAgentsRequest{PageToken: tok})
			return err
		}, []string{"page_token", "another list"}},
		{"too long", func() error {
			_, err := e.client.ListAgents(ctx, &adminv1.ListAgentsRequest{PageToken: string(make([]byte, 5000))})
			return err
		}, []string{"page_token", "too long"}},
	} {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(), codes.InvalidArgument, tt.want...) })
	}

	// The token still works, until it is stale.
	if _, err := e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageSize: 2, PageToken: tok}); err != nil {
		t.Fatalf("second page: %v", err)
	}
	e.srv.pager.now = func() time.Time { return testNow.Add(PageTokenTTL + time.Second) }
	_, err = e.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageSize: 2, PageToken: tok})
	wantCode(t, err, codes.InvalidArgument, "page_token", "expired")

	// A token of another CA process (a restart) is refused.
	other := newEnv(t)
	_, err = other.client.ListEntries(ctx, &adminv1.ListEntriesRequest{ParentId: agentID, PageSize: 2, PageToken: tok})
	wantCode(t, err, codes.InvalidArgument, "page_token", "restarted")
}

func TestListAgentsAndBundlesPages(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var agents []string
	for i := range 7 {
		id := fmt.Sprintf("spiffe://example.org/sigil/agent/join_token/a%02d", i)
		agents = append(agents, id)
		if _, err := e.store.CreateAgent(ctx, "ca", store.Agent{ID: id, AttestationType: "join_token", Serial: "01", ExpiresAt: testNow.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	req := &adminv1.ListAgentsRequest{PageSize: 3}
	for pages := 1; ; pages++ {
		resp, err := e.client.ListAgents(ctx, req)
		if err != nil {
			t.Fatalf("ListAgents page %d: %v", pages, err)
		}
		for _, a := range resp.GetAgents() {
			got = append(got, a.GetId())
		}
		if resp.GetNextPageToken() == "" {
			if pages != 3 {
				t.Errorf("%d pages of agents, want 3", pages)
			}
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if !slices.Equal(got, agents) {
		t.Fatalf("listed agents %v, want %v", got, agents)
	}

	var tds []string
	for i := range 5 {
		td := fmt.Sprintf("partner%d.org", i)
		tds = append(tds, td)
		if err := e.store.SetBundle(ctx, "test", store.Bundle{TrustDomain: td, X509Authorities: [][]byte{{1, 2, 3}}}); err != nil {
			t.Fatal(err)
		}
	}
	got = nil
	breq := &adminv1.ListBundlesRequest{PageSize: 2}
	for {
		resp, err := e.client.ListBundles(ctx, breq)
		if err != nil {
			t.Fatalf("ListBundles: %v", err)
		}
		for _, b := range resp.GetBundles() {
			got = append(got, b.GetTrustDomain())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		breq.PageToken = resp.GetNextPageToken()
	}
	if !slices.Equal(got, tds) {
		t.Fatalf("listed bundles %v, want %v", got, tds)
	}
}

func TestPageCutsByBytes(t *testing.T) {
	big := make([]*adminv1.AuditEvent, 10)
	for i := range big {
		big[i] = &adminv1.AuditEvent{Id: int64(i), Details: string(make([]byte, MaxPageBytes/4))}
	}
	out, more := page(big, 100)
	if !more || len(out) != 3 {
		t.Fatalf("page of 10 quarter-limit items: %d items, more %v; want 3, true", len(out), more)
	}
	huge := []*adminv1.AuditEvent{{Details: string(make([]byte, MaxPageBytes+1))}, {}}
	if out, more := page(huge, 100); len(out) != 1 || !more {
		t.Fatalf("one oversized item: %d items, more %v; want it alone", len(out), more)
	}
}
