package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/internal/docgen"
)

var update = flag.Bool("update", false, "rewrite the generated sections of README.md")

// TestREADME keeps the generated reference sections of README.md equal to
// what the code says.
func TestREADME(t *testing.T) {
	t.Setenv("HOME", "/home/you") // defaults under $HOME print the same everywhere
	root := filepath.Join("..", "..")
	sections := map[string]string{"cli": docgen.CLI(newRootCmd())}
	for name, src := range map[string][2]string{
		"config-ca":    {"ca/caconfig/caconfig.go", "File"},
		"config-agent": {"agent/agentconfig/agentconfig.go", "File"},
		"config-authz": {"authz/authzconfig/authzconfig.go", "File"},
	} {
		out, err := docgen.Config(filepath.Join(root, src[0]), src[1])
		if err != nil {
			t.Fatal(err)
		}
		sections[name] = out
	}
	path := filepath.Join(root, "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	want := readme
	for name, body := range sections {
		begin, end := fmt.Sprintf("<!-- BEGIN GENERATED: %s -->\n", name), fmt.Sprintf("<!-- END GENERATED: %s -->", name)
		i, j := strings.Index(want, begin), strings.Index(want, end)
		if i < 0 || j < i {
			t.Fatalf("README.md lacks the markers of section %q", name)
		}
		want = want[:i+len(begin)] + body + want[j:]
	}
	if want == readme {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("README.md's generated sections are out of date: run go test ./cmd/sigil -run TestREADME -update")
}
