package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestTokenCreate(t *testing.T) {
	e := startAdmin(t)
	out, errOut, err := run(t, "", "token", "create", "--ttl", "1h", "--admin-socket", e.socket)
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	// Only the token on standard output, so that scripts can capture it.
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(out) {
		t.Fatalf("stdout %q, want exactly one 64-hex-digit token line", out)
	}
	if !strings.Contains(errOut, cliNow.Add(time.Hour).Format(time.RFC3339)) {
		t.Fatalf("stderr %q does not give the expiry", errOut)
	}
	if _, err := e.store.ConsumeJoinToken(context.Background(), strings.TrimSpace(out), cliNow); err != nil {
		t.Fatalf("the printed token is not in the store: %v", err)
	}
	_, _, err = run(t, "", "token", "create", "--ttl", "-1m", "--admin-socket", e.socket)
	if err == nil || !strings.Contains(err.Error(), "--ttl") {
		t.Fatalf("negative ttl error = %v", err)
	}
}
