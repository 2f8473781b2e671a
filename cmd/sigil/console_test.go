package main

import (
	"strings"
	"testing"
)

func TestConsoleListensOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8089", ":8089", "10.1.2.3:80", "example.org:80", "nonsense"} {
		_, _, err := run(t, "", "console", "--listen", addr, "--admin-socket", "/nonexistent/admin.sock")
		if err == nil || !strings.Contains(err.Error(), "--listen") || exitCode(err) != exitUsage {
			t.Errorf("--listen %s: %v (exit %d), want a usage error about --listen", addr, err, exitCode(err))
		}
	}
}
