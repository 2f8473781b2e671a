package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// talkers are the commands that reach an agent ("socket") or the CA
// ("admin-socket"): every command with one of those flags.
func talkers(cmd *cobra.Command) map[string]string {
	out := map[string]string{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() {
			for _, f := range []string{"admin-socket", "socket"} {
				if c.Flag(f) != nil {
					out[strings.TrimPrefix(c.CommandPath(), "sigil ")] = f
				}
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cmd)
	return out
}

// With neither agent nor CA running, every command that talks to one says
// which socket it tried and how to start what is missing, exits with
// exitUnavailable, and shows no raw gRPC text. Arguments make each command
// get as far as dialing; a new command needs its line here.
func TestCommandsWithNothingRunning(t *testing.T) {
	// audit verify asks the CA for the trust bundle only for a log with
	// checkpoints.
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath+".checkpoints", []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := map[string][]string{
		"audit verify":      {logPath},
		"svid revoke":       {"--serial", "ab12"},
		"agent ban":         {"x"},
		"agent evict":       {"x"},
		"ca revoke":         {"--kind", "x509", "x"},
		"ca taint":          {"x"},
		"entry create":      {"--spiffe-id", "spiffe://example.org/a", "--parent-id", "spiffe://example.org/p", "--selector", "unix:uid:1"},
		"entry delete":      {"x"},
		"entry show":        {"x"},
		"entry update":      {"x", "--selector", "unix:uid:2"},
		"jwt fetch":         {"--audience", "a"},
		"jwt validate":      {"token", "--audience", "a"},
		"bundle delete":     {"--trust-domain", "other.org"},
		"bundle set":        {"--trust-domain", "other.org", "--file", "-"},
		"console":           {"--listen", "127.0.0.1:0"},
		"federation create": {"--trust-domain", "other.org", "--bundle-endpoint-url", "https://h/"},
		"federation delete": {"--trust-domain", "other.org"},
		"federation show":   {"--trust-domain", "other.org"},
	}
	home := t.TempDir()
	down := filepath.Join(t.TempDir(), "down.sock")
	cmds := talkers(newRootCmd())
	if len(cmds) < 15 {
		t.Fatalf("found only %d commands that talk to an agent or CA: %v", len(cmds), cmds)
	}
	for path, flag := range cmds {
		for _, form := range []string{"default", "path", "url"} {
			t.Run(path+"/"+form, func(t *testing.T) {
				t.Setenv("HOME", home)
				unsetenv(t, "SIGIL_ADMIN_SOCKET")
				unsetenv(t, "SIGIL_SOCKET")
				want := filepath.Join(home, ".sigil", "dev", "admin.sock")
				if flag == "socket" {
					want = filepath.Join(home, ".sigil", "dev", "agent.sock")
				}
				argv := append(strings.Fields(path), args[path]...)
				switch form {
				case "path":
					argv, want = append(argv, "--"+flag, down), down
				case "url":
					argv, want = append(argv, "--"+flag, "unix://"+down), down
				}
				if form == "default" {
					// Nothing in the environment: the defaults of `sigil dev`.
					unsetenv(t, "SPIFFE_ENDPOINT_SOCKET")
				}
				_, _, err := run(t, "", argv...)
				if err == nil {
					t.Fatalf("%v succeeded with nothing running", argv)
				}
				msg := err.Error()
				if code := exitCode(err); code != exitUnavailable {
					t.Errorf("exit code %d, want %d (%s)", code, exitUnavailable, msg)
				}
				for _, s := range []string{"nothing is listening at " + want, "sigil dev"} {
					if !strings.Contains(msg, s) {
						t.Errorf("%q lacks %q", msg, s)
					}
				}
				if strings.Contains(msg, "rpc error") || strings.Contains(msg, "desc =") {
					t.Errorf("raw gRPC text: %s", msg)
				}
			})
		}
	}
}

// unsetenv removes k for the test and puts it back after.
func unsetenv(t *testing.T, k string) {
	t.Setenv(k, "")
	os.Unsetenv(k)
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"no-such-command"}, exitUsage},
		{[]string{"entry", "list", "--no-such-flag"}, exitUsage},
		{[]string{"entry", "show"}, exitUsage},
		{[]string{"agent", "list", "-o", "xml"}, exitUsage},
		{[]string{"policy", "replay", "--no-such-flag"}, exitUsage},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := run(t, "", tc.args...)
			if got := exitCode(err); got != tc.want {
				t.Fatalf("exit code %d (%v), want %d", got, err, tc.want)
			}
		})
	}
	if got := exitCode(errors.New("x")); got != exitFailure {
		t.Fatalf("plain error: %d", got)
	}
}
