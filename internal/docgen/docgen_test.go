package docgen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestConfig(t *testing.T) {
	src := `package x
type File struct {
	Name string ` + "`yaml:\"name\"`" + ` // who | what
	Sub  *Sub   ` + "`yaml:\"sub\"`" + `  // nested
	Subs map[string]Sub ` + "`yaml:\"subs\"`" + ` // by name
	Skip string
}
type Sub struct {
	// Port to listen on.
	Port int ` + "`yaml:\"port\"`" + `
	Tags []string ` + "`yaml:\"tags,omitempty\"`" + `
}`
	path := filepath.Join(t.TempDir(), "x.go")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Config(path, "File")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| `name` | string | who \\| what |", "| `sub` | map | nested |", "| `sub.port` | integer | Port to listen on. |", "| `sub.tags` | list of strings |", "| `subs` | map of NAME to map | by name |", "| `subs.NAME.port` | integer |"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "Skip") {
		t.Error("untagged field rendered")
	}
	if _, err := Config(path, "Nope"); err == nil {
		t.Error("unknown struct accepted")
	}
}

func TestCLI(t *testing.T) {
	root := &cobra.Command{Use: "tool"}
	run := func(*cobra.Command, []string) {}
	sub := &cobra.Command{Use: "do THING", Short: "Do a thing", Run: run}
	sub.Flags().String("mode", "fast", "how")
	root.AddCommand(sub, &cobra.Command{Use: "secret", Hidden: true, Run: run})
	got := CLI(root)
	if !strings.Contains(got, "#### `tool do THING [flags]`") || !strings.Contains(got, "--mode string") || strings.Contains(got, "secret") {
		t.Fatalf("got\n%s", got)
	}
}
