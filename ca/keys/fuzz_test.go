package keys_test

import (
	"path/filepath"
	"testing"

	"github.com/sigilhq/sigil/ca/keys"
)

// FuzzValidateName checks that every accepted name maps to a file directly
// inside the key directory and to a well-formed PKCS#11 label.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"root", "x509-3", "jwt-7", "", "../root", "a/b", "A", "a\x00b"} {
		f.Add(s)
	}
	dir := f.TempDir()
	d, err := keys.NewDisk(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if keys.ValidateName(name) != nil {
			if _, err := d.Path(name); err == nil {
				t.Fatalf("Path accepted invalid name %q", name)
			}
			return
		}
		if len(name) == 0 || len(name) > keys.MaxNameLen {
			t.Fatalf("accepted name of length %d", len(name))
		}
		p, err := d.Path(name)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(p) != dir || filepath.Base(p) != name+".key" {
			t.Fatalf("name %q maps to %q, outside %q", name, p, dir)
		}
	})
}
