package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// TestEntryListHundredThousand: sigil entry list follows the CA's pages
// through 100,000 entries, each listed once, in table and JSON output.
func TestEntryListHundredThousand(t *testing.T) {
	const n = 100000
	e := startAdmin(t)
	start := time.Now()
	for from := 0; from < n; from += 10000 {
		es := make([]store.Entry, 0, 10000)
		for i := from; i < from+10000; i++ {
			es = append(es, store.Entry{
				SPIFFEID:  fmt.Sprintf("spiffe://example.org/ns/team-%d/sa/service-account-%06d", i%97, i),
				ParentID:  cliParent,
				Selectors: []selector.Selector{{Type: "k8s", Value: fmt.Sprintf("sa:service-account-%06d", i)}, {Type: "k8s", Value: fmt.Sprintf("ns:team-%d", i%97)}},
				DNSNames:  []string{fmt.Sprintf("workload-%06d.team-%d.svc.cluster.local", i, i%97)},
			})
		}
		if _, err := e.store.CreateEntries(context.Background(), "test", es); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("created %d entries in %s", n, time.Since(start).Round(time.Millisecond))
	sock := []string{"--admin-socket", e.socket}

	start = time.Now()
	out, _, err := run(t, "", append([]string{"entry", "list", "--parent-id", cliParent}, sock...)...)
	if err != nil {
		t.Fatalf("entry list: %v", err)
	}
	t.Logf("entry list (table) in %s", time.Since(start).Round(time.Millisecond))
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != n+1 {
		t.Fatalf("entry list printed %d rows, want header + %d", len(rows), n)
	}
	seen := make(map[string]bool, n)
	for _, r := range rows[1:] {
		id, _, _ := strings.Cut(r, " ")
		if seen[id] {
			t.Fatalf("entry %s listed twice", id)
		}
		seen[id] = true
	}

	start = time.Now()
	out, _, err = run(t, "", append([]string{"entry", "list", "--output", "json"}, sock...)...)
	if err != nil {
		t.Fatalf("entry list --output json: %v", err)
	}
	t.Logf("entry list (json) in %s", time.Since(start).Round(time.Millisecond))
	var doc struct {
		Entries       []struct{ ID string } `json:"entries"`
		NextPageToken string                `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("entry list json: %v", err)
	}
	if len(doc.Entries) != n || doc.NextPageToken != "" {
		t.Fatalf("entry list json: %d entries, next page token %q; want %d and none", len(doc.Entries), doc.NextPageToken, n)
	}
}

// TestEntryCreateBatchLimits: a batch over the CA's per-call count or size
// limit is streamed instead, still all or none; a bad entry at the end of
// 100,000 is named by its position and leaves nothing written.
func TestEntryCreateBatchLimits(t *testing.T) {
	e := startAdmin(t)
	sock := []string{"--admin-socket", e.socket}
	next := 0 // every file's entries are new
	write := func(n, dnsPerEntry int) string {
		var b strings.Builder
		for i := next; i < next+n; i++ {
			fmt.Fprintf(&b, "- spiffe_id: spiffe://example.org/w/%d\n  parent_id: %s\n  selectors: [unix:uid:%d]\n", i, cliParent, i)
			if dnsPerEntry > 0 {
				b.WriteString("  dns_names: [")
				for j := range dnsPerEntry {
					if j > 0 {
						b.WriteString(", ")
					}
					fmt.Fprintf(&b, "name-%d-%s.example", j, strings.Repeat("x", 40))
				}
				b.WriteString("]\n")
			}
		}
		next += n
		file := filepath.Join(t.TempDir(), "entries.yaml")
		if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	count := func(t *testing.T) int {
		t.Helper()
		n, err := e.store.Revision(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	bad := write(100_000, 0)
	data, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	// Entry 99,999 of the file (index 99998) gets a SPIFFE ID of another
	// trust domain.
	spoiled := strings.Replace(string(data), "spiffe://example.org/w/99998\n", "spiffe://evil.org/w/99998\n", 1)
	if err := os.WriteFile(bad, []byte(spoiled), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, "", append([]string{"entry", "create", "--file", bad}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "entries[99998].spiffe_id") {
		t.Fatalf("entry create of a bad 100,000-entry file: error %v, want one naming entries[99998]", err)
	}
	if n := count(t); n != 0 {
		t.Fatalf("revision %d after a refused file, want 0", n)
	}
	for _, tt := range []struct {
		name string
		file string
		want int
	}{
		{"over the count limit", write(2500, 0), 2500},
		{"over the size limit", write(900, 100), 900},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := count(t)
			out, _, err := run(t, "", append([]string{"entry", "create", "--file", tt.file}, sock...)...)
			if err != nil {
				t.Fatalf("entry create: %v", err)
			}
			if want := fmt.Sprintf("created %d entries (revisions %d to %d)", tt.want, before+1, before+tt.want); !strings.Contains(out, want) {
				t.Fatalf("entry create printed %q, want %q", out, want)
			}
			if after := count(t); after != before+tt.want {
				t.Fatalf("revision %d after the batch, want %d", after, before+tt.want)
			}
		})
	}
	// Up to the per-call limit, one call that prints what it created.
	out, _, err := run(t, "", append([]string{"entry", "create", "--file", write(1000, 0)}, sock...)...)
	if err != nil {
		t.Fatalf("entry create of the largest unary batch: %v", err)
	}
	if rows := strings.Count(strings.TrimSpace(out), "\n"); rows != 1000 {
		t.Fatalf("entry create printed %d rows, want header + 1000", rows)
	}
}
