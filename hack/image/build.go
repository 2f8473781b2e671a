package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	sigilbuild "github.com/sigilhq/sigil/internal/buildinfo"
)

const (
	// DefaultTag is the reference deploy/kubernetes runs.
	DefaultTag = "ghcr.io/sigilhq/sigil:latest"
	// DefaultCACerts is where Debian-like hosts keep their root bundle.
	DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultPackage is the sigil command.
	DefaultPackage = "github.com/sigilhq/sigil/cmd/sigil"
	// BinaryPath is where the image holds sigil; it is the entrypoint.
	BinaryPath = "/usr/local/bin/sigil"
	// User is the image's user: not root, the uid distroless calls nonroot
	// and deploy/kubernetes sets in runAsUser.
	User = "65532:65532"
	// nonroot is User's uid and gid.
	nonroot = 65532
	// maxCACerts bounds the bundle read from --ca-certs.
	maxCACerts = 4 << 20
	// maxBuildOutput bounds the go build output quoted in an error.
	maxBuildOutput = 8 << 10
)

// Options says what to build.
type Options struct {
	Tag     string // reference the outputs are tagged with
	Arch    string // GOARCH; the OS is linux
	CACerts string // PEM bundle for /etc/ssl/certs/ca-certificates.crt; empty for none
	Package string // Go package built as BinaryPath
}

// Image is a built image with what it was built from.
type Image struct {
	Image  v1.Image
	Tag    name.Tag
	Arch   string          // GOARCH of the binary
	Digest v1.Hash         // the manifest's digest
	Info   sigilbuild.Info // what the binary says of itself
}

var archRE = regexp.MustCompile(`^[a-z0-9]+$`)

// Build compiles a static sigil for linux/o.Arch and wraps it in a one-layer
// OCI image. Every timestamp is the commit time stamped in the binary (the
// Unix epoch without one), so the same source gives the same digest.
func Build(ctx context.Context, o Options) (*Image, error) {
	tag, err := name.NewTag(o.Tag, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("tag %q: %w", o.Tag, err)
	}
	if !archRE.MatchString(o.Arch) {
		return nil, fmt.Errorf("arch %q: want a GOARCH such as amd64 or arm64", o.Arch)
	}
	if o.Package == "" {
		return nil, errors.New("no package to build")
	}
	var certs []byte
	if o.CACerts != "" {
		if certs, err = readCACerts(o.CACerts); err != nil {
			return nil, err
		}
	}
	bin, err := goBuild(ctx, o.Package, o.Arch)
	if err != nil {
		return nil, err
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("read build info of the built binary: %w", err)
	}
	info := sigilbuild.FromBuildInfo(bi)
	created := time.Unix(0, 0).UTC()
	for _, s := range bi.Settings {
		if s.Key == "vcs.time" {
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
				created = t.UTC()
			}
		}
	}

	layer, err := rootfs(bin, certs, created)
	if err != nil {
		return nil, err
	}
	revision := info.Commit
	if info.Modified {
		revision += "-dirty"
	}
	cfg := &v1.ConfigFile{
		Architecture: o.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			Entrypoint: []string{BinaryPath},
			User:       User,
			WorkingDir: "/",
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			Labels: map[string]string{
				"org.opencontainers.image.title":    "sigil",
				"org.opencontainers.image.source":   "https://github.com/sigilhq/sigil",
				"org.opencontainers.image.version":  info.Version,
				"org.opencontainers.image.revision": revision,
				"org.opencontainers.image.created":  created.Format(time.RFC3339),
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "go run ./hack/image",
			Comment:   "static sigil " + info.Version + " at " + BinaryPath,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("add layer: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("image digest: %w", err)
	}
	return &Image{Image: img, Tag: tag, Arch: o.Arch, Digest: digest, Info: info}, nil
}

// readCACerts reads a PEM bundle and checks it holds certificates only.
func readCACerts(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ca certs: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCACerts+1))
	if err != nil {
		return nil, fmt.Errorf("ca certs %s: %w", path, err)
	}
	if len(data) > maxCACerts {
		return nil, fmt.Errorf("ca certs %s: larger than %d bytes", path, maxCACerts)
	}
	n := 0
	for rest := data; ; n++ {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("ca certs %s: a %q block; want certificates only", path, b.Type)
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("ca certs %s: no PEM certificate", path)
	}
	return data, nil
}

// goBuild compiles pkg as a static, stripped, path-free linux binary and
// returns its bytes. -buildvcs=auto stamps the commit when there is one,
// whatever GOFLAGS says, since the image's labels come from it.
func goBuild(ctx context.Context, pkg, arch string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "sigil-image-")
	if err != nil {
		return nil, fmt.Errorf("go build: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "sigil")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=auto",
		"-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		if len(msg) > maxBuildOutput {
			msg = append([]byte("..."), msg[len(msg)-maxBuildOutput:]...)
		}
		return nil, fmt.Errorf("go build %s for linux/%s: %w\n%s", pkg, arch, err, msg)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("go build: %w", err)
	}
	return bin, nil
}

// entry is one file or directory of the image's root file system.
type entry struct {
	path     string
	mode     int64
	uid, gid int
	data     []byte // nil for a directory
}

// rootfs is the image's only layer: sigil, the CA bundle, passwd and group
// naming the nonroot user, and the directories holding them, all owned by
// root except nonroot's home, all dated created.
func rootfs(bin, certs []byte, created time.Time) (v1.Layer, error) {
	entries := []entry{
		{path: "etc/", mode: 0o755},
		{path: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{path: "home/", mode: 0o755},
		{path: "home/nonroot/", mode: 0o700, uid: nonroot, gid: nonroot},
		{path: "tmp/", mode: 0o1777},
		{path: "usr/", mode: 0o755},
		{path: "usr/local/", mode: 0o755},
		{path: "usr/local/bin/", mode: 0o755},
		{path: "usr/local/bin/sigil", mode: 0o755, data: bin},
	}
	if certs != nil {
		entries = append(entries,
			entry{path: "etc/ssl/", mode: 0o755},
			entry{path: "etc/ssl/certs/", mode: 0o755},
			entry{path: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: certs})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.path,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.path, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("layer %s: %w", e.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return layer, nil
}
