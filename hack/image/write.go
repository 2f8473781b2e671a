package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WriteLayout writes img as an OCI image layout at dir, which must not
// exist or be empty. It is built in a temporary directory beside dir and
// renamed into place, so a failure leaves nothing half-written.
func WriteLayout(dir string, img *Image) (err error) {
	if err := checkLayoutDir(dir); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".sigil-image-*")
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	err = p.AppendImage(img.Image,
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: img.Arch}),
		layout.WithAnnotations(map[string]string{
			// The tag, as the layout spec has it (skopeo oci:DIR:latest) ...
			"org.opencontainers.image.ref.name": img.Tag.TagStr(),
			// ... and the whole name, which containerd imports by.
			"io.containerd.image.name": img.Tag.Name(),
		}))
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	// go-containerregistry writes index.json and oci-layout executable.
	for _, f := range []string{"index.json", "oci-layout"} {
		if err := os.Chmod(filepath.Join(tmp, f), 0o644); err != nil {
			return fmt.Errorf("oci layout: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	return nil
}

// WriteTarball writes img as a docker-archive tarball at path, replacing
// it whole or not at all.
func WriteTarball(path string, img *Image) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".sigil-image-*.tar")
	if err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := tarball.Write(img.Tag, img.Image, f); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("tarball: %w", err)
	}
	return nil
}

// checkLayoutDir refuses a dir that exists with something in it.
func checkLayoutDir(dir string) error {
	switch entries, err := os.ReadDir(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("oci layout: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("oci layout: %s exists and is not empty", dir)
	}
	return nil
}
