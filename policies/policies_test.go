package policies_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigilhq/sigil/authz/policysrc"
	"github.com/sigilhq/sigil/authz/policytool"
	"github.com/sigilhq/sigil/policies"
)

// TestRego runs every *_test.rego with OPA's tester: the library alone and
// the library with each example.
func TestRego(t *testing.T) {
	for _, paths := range [][]string{
		{"lib"},
		{"lib", "examples/shop"},
		{"lib", "examples/grpc"},
		{"lib", "examples/demo"},
	} {
		t.Run(filepath.Join(paths...), func(t *testing.T) {
			var out bytes.Buffer
			n, err := policytool.Test(context.Background(), &out, paths, false)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			t.Logf("%d Rego tests passed", n)
		})
	}
}

func TestSeedLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	if err := policies.Seed(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data.json")); err != nil {
		t.Fatal(err)
	}
	p, err := policysrc.Dir{Path: dir}.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name := range p.Modules {
		if policysrc.IsTestFile(name) {
			t.Errorf("test module %s served", name)
		}
	}
	if _, ok := p.Data["sigil"]; !ok {
		t.Fatalf("seeded data lacks sigil.edges: %v", p.Data)
	}
}
