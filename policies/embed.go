// Package policies holds Sigil's Rego library for mesh policies and worked examples, embedded so `sigil dev` can seed a policy directory.
package policies

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

//go:embed lib examples
var files embed.FS

// FS returns the embedded lib/ and examples/ trees.
func FS() fs.FS { return files }

// DevExample is the example `sigil dev` starts with.
const DevExample = "examples/shop"

// Seed writes lib/ (without tests) and the files of DevExample into dir,
// which is created; files are written 0644, directories 0755.
func Seed(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	copyTree := func(root, to string) error {
		return fs.WalkDir(files, root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
			target := filepath.Join(to, filepath.FromSlash(rel))
			if d.IsDir() {
				return os.MkdirAll(target, 0o755)
			}
			b, err := files.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		})
	}
	if err := copyTree("lib", filepath.Join(dir, "lib")); err != nil {
		return err
	}
	return copyTree(DevExample, dir)
}
