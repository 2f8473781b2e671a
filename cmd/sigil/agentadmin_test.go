package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestAgentCommands(t *testing.T) {
	e := startAdmin(t)
	sock := []string{"--admin-socket", e.socket}
	other := "spiffe://example.org/sigil/agent/join_token/def"
	for _, id := range []string{cliParent, other} {
		if _, err := e.store.CreateAgent(context.Background(), "ca", store.Agent{ID: id, AttestationType: "join_token", Serial: "0abc",
			ExpiresAt: cliNow.Add(time.Hour), Selectors: []selector.Selector{{Type: "join_token", Value: "x"}}}); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := run(t, "", append([]string{"agent", "list"}, sock...)...)
	if err != nil || !strings.Contains(out, cliParent) || !strings.Contains(out, other) || !strings.Contains(out, "0abc") {
		t.Fatalf("agent list: %q, %v", out, err)
	}
	if out, _, err := run(t, "", append([]string{"agent", "ban", cliParent}, sock...)...); err != nil || !strings.Contains(out, "banned agent") {
		t.Fatalf("agent ban: %q, %v", out, err)
	}
	if a, err := e.store.GetAgent(context.Background(), cliParent); err != nil || !a.Banned || a.Serial != "" {
		t.Fatalf("banned agent in store = %+v, %v", a, err)
	}
	if out, _, err := run(t, "", append([]string{"agent", "evict", other}, sock...)...); err != nil || !strings.Contains(out, "evicted agent") {
		t.Fatalf("agent evict: %q, %v", out, err)
	}
	_, _, err = run(t, "", append([]string{"agent", "evict", other}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "agent "+other+" not found") {
		t.Fatalf("evict twice error = %v", err)
	}
	_, _, err = run(t, "", append([]string{"agent", "ban", "not-an-id"}, sock...)...)
	if err == nil || !strings.Contains(err.Error(), "invalid argument: id") {
		t.Fatalf("ban bad id error = %v", err)
	}
}
