package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var exampleFlag = regexp.MustCompile(`(?:^|\s)--([a-z0-9-]+)`)

// Every `sigil ...` line in a command's examples names a command that
// exists and only flags that command has.
func TestExamplesUseRealFlags(t *testing.T) {
	root := newRootCmd()
	var walk func(*cobra.Command)
	checked := 0
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.Example, "\n") {
			_, rest, ok := strings.Cut(line, "sigil ")
			if !ok {
				continue
			}
			rest, _, _ = strings.Cut(rest, "#")
			rest, _, _ = strings.Cut(rest, ")")
			target, args, err := root.Find(strings.Fields(rest))
			if err != nil || target == root {
				t.Errorf("%s: example %q names no command: %v", c.CommandPath(), line, err)
				continue
			}
			for _, m := range exampleFlag.FindAllStringSubmatch(strings.Join(args, " "), -1) {
				if target.Flag(m[1]) == nil {
					t.Errorf("%s: example %q uses --%s, which %s does not have", c.CommandPath(), line, m[1], target.CommandPath())
				}
				checked++
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if checked < 5 {
		t.Fatalf("checked only %d example flags", checked)
	}
}
