package dev

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/e2e"
)

// quickstart returns the shell blocks of README.md's Quickstart section,
// one command a line, comments removed.
func quickstart(t *testing.T, readme string) [][]string {
	t.Helper()
	_, sec, ok := strings.Cut(readme, "\n## Quickstart\n")
	if !ok {
		t.Fatal("README.md has no Quickstart section")
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	var blocks [][]string
	var cur []string
	in := false
	for _, line := range strings.Split(sec, "\n") {
		switch {
		case strings.HasPrefix(line, "```sh"):
			in, cur = true, nil
		case strings.HasPrefix(line, "```") && in:
			in = false
			blocks = append(blocks, cur)
		case in:
			cmd, _, _ := strings.Cut(line, " #")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cur = append(cur, cmd)
			}
		}
	}
	return blocks
}

// TestQuickstart runs README.md's quickstart line by line, as written,
// with `sigil` on PATH, a fresh HOME and a fresh working directory: the
// first block starts `sigil dev`, every later line must exit 0. Only the
// ports differ (through the flags' environment twins), so that a `sigil
// dev` already running here does not get in the way.
func TestQuickstart(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := quickstart(t, string(raw))
	if len(blocks) < 3 || len(blocks[0]) != 1 || blocks[0][0] != "sigil dev" {
		t.Fatalf("README's Quickstart blocks %q: want `sigil dev` alone first, then commands", blocks)
	}
	home, work := t.TempDir(), t.TempDir()
	// Nothing from this environment points sigil elsewhere.
	env := append(slicesWithout(os.Environ(), "SIGIL_", "SPIFFE_ENDPOINT_SOCKET="),
		"HOME="+home,
		"PATH="+filepath.Dir(sigil.Path)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SIGIL_SERVER_ADDRESS=127.0.0.1:0", "SIGIL_HEALTH_ADDRESS=127.0.0.1:0",
		"SIGIL_AUTHZ_ADDRESS="+e2e.FreeAddr(t),
	)

	dev := exec.Command("sh", "-c", "exec "+blocks[0][0])
	dev.Dir, dev.Env = work, env
	dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logPath := filepath.Join(t.TempDir(), "dev.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	dev.Stdout, dev.Stderr = logFile, logFile
	out := outputOf(logPath)
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { dev.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-dev.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-dev.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	waitOutput(t, "Sigil dev is running", done, out)

	decisions := regexp.MustCompile(`~/\.sigil/dev/decisions\.log`)
	for _, block := range blocks[1:] {
		for _, line := range block {
			if strings.HasPrefix(line, "sigil audit verify") && decisions.MatchString(line) {
				// authz signs a checkpoint within 2 s of a decision; a
				// person typing takes longer than the test.
				waitNonEmpty(t, filepath.Join(home, ".sigil", "dev", "decisions.log.checkpoints"), 15*time.Second)
			}
			c := exec.Command("sh", "-c", line)
			c.Dir, c.Env = work, env
			var stdout, stderr bytes.Buffer
			c.Stdout, c.Stderr = &stdout, &stderr
			if err := c.Run(); err != nil {
				t.Fatalf("README quickstart line failed: %s\n%v\nstdout:\n%s\nstderr:\n%s\nsigil dev:\n%s", line, err, stdout.String(), stderr.String(), out)
			}
			t.Logf("$ %s\n%s", line, stdout.String())
			if strings.HasPrefix(line, "sigil authz check") && !strings.Contains(stdout.String(), "allow") {
				t.Fatalf("%s did not print allow:\n%s", line, stdout.String())
			}
			if strings.HasPrefix(line, "sigil audit verify") && !strings.Contains(stdout.String(), "signed: ") {
				t.Fatalf("%s verified no signed checkpoint:\n%s", line, stdout.String())
			}
		}
	}
}

// TestREADMELinks checks that every relative link of README.md names a
// file in the repository and none leaves it.
func TestREADMELinks(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	links := regexp.MustCompile(`\]\(([^)\s]+)\)`).FindAllStringSubmatch(string(raw), -1)
	if len(links) == 0 {
		t.Fatal("no links found in README.md")
	}
	for _, m := range links {
		link := m[1]
		if strings.Contains(link, "://") || strings.HasPrefix(link, "#") {
			continue
		}
		p := filepath.Clean(filepath.Join(root, strings.SplitN(link, "#", 2)[0]))
		if rel, err := filepath.Rel(root, p); err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("link %s leaves the repository", link)
			continue
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("link %s: %v", link, err)
		}
	}
}

func waitNonEmpty(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within %s", path, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// slicesWithout drops the entries that start with any of drop.
func slicesWithout(env []string, drop ...string) []string {
	var out []string
	for _, e := range env {
		keep := true
		for _, d := range drop {
			if strings.HasPrefix(e, d) {
				keep = false
			}
		}
		if keep {
			out = append(out, e)
		}
	}
	return out
}
