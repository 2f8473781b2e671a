package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/internal/testca"
)

// TestImage builds the image twice, reads the OCI layout and the tarball
// back with go-containerregistry, checks the config, unpacks the layer and
// runs sigil from it, and checks both builds have one digest.
func TestImage(t *testing.T) {
	ctx := t.Context()
	if d, ok := t.Deadline(); ok {
		// Stop go build before the test binary panics and orphans it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-20*time.Second))
		defer cancel()
	}
	dir := t.TempDir()
	certs := testca.CertsPEM(testca.New(t, spiffeid.RequireTrustDomainFromString("image.test")).Roots())
	certsPath := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(certsPath, certs, 0o644); err != nil {
		t.Fatal(err)
	}

	build := func(sub string) (ociDir, tarPath, line string) {
		t.Helper()
		ociDir, tarPath = filepath.Join(dir, sub, "oci"), filepath.Join(dir, sub, "sigil.tar")
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		start := time.Now()
		if err := run(ctx, []string{"--oci", ociDir, "--tar", tarPath, "--ca-certs", certsPath}, &stdout, &stderr); err != nil {
			t.Fatalf("image --oci --tar: %v\n%s", err, stderr.String())
		}
		t.Logf("built in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stdout.String()))
		return ociDir, tarPath, stdout.String()
	}
	ociDir, tarPath, line := build("one")

	// The layout, read back.
	idx, err := layout.ImageIndexFromPath(ociDir)
	if err != nil {
		t.Fatalf("read oci layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index lists %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want %s", desc.MediaType, types.OCIManifestSchema1)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "latest" {
		t.Errorf("ref.name annotation %q, want latest", got)
	}
	if got := desc.Annotations["io.containerd.image.name"]; got != DefaultTag {
		t.Errorf("io.containerd.image.name annotation %q, want %s", got, DefaultTag)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != runtime.GOARCH {
		t.Errorf("platform %+v, want linux/%s", desc.Platform, runtime.GOARCH)
	}
	if !strings.HasPrefix(line, DefaultTag+"@"+desc.Digest.String()+" ") {
		t.Errorf("printed %q, want it to start with %s@%s", line, DefaultTag, desc.Digest)
	}
	for _, f := range []string{"index.json", "oci-layout"} {
		if fi, err := os.Stat(filepath.Join(ociDir, f)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v (%v), want mode 0644", f, fi.Mode(), err)
		}
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}

	// The config: sigil as entrypoint, not root, labelled.
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("config platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if !reflect.DeepEqual(cfg.Config.Entrypoint, []string{"/usr/local/bin/sigil"}) {
		t.Errorf("entrypoint %q, want [/usr/local/bin/sigil]", cfg.Config.Entrypoint)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", cfg.Config.User)
	}
	for _, root := range []string{"", "0", "root", "0:0"} {
		if cfg.Config.User == root {
			t.Errorf("the image runs as root (user %q)", cfg.Config.User)
		}
	}
	labels := cfg.Config.Labels
	for _, k := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source", "org.opencontainers.image.created"} {
		if labels[k] == "" {
			t.Errorf("label %s missing: %v", k, labels)
		}
	}
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if mf.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %s, want %s", mf.Config.MediaType, types.OCIConfigJSON)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 || len(mf.Layers) != 1 || mf.Layers[0].MediaType != types.OCILayer {
		t.Fatalf("%d layers (%+v), want one %s", len(layers), mf.Layers, types.OCILayer)
	}

	// The layer, unpacked: who owns what, and sigil runs from it.
	rootDir := filepath.Join(dir, "rootfs")
	headers := unpack(t, layers[0], rootDir)
	for path, h := range headers {
		if !h.ModTime.Equal(cfg.Created.Time) {
			t.Errorf("%s dated %s, want the image's creation time %s", path, h.ModTime, cfg.Created.Time)
		}
		if h.Uid == nonroot && path != "home/nonroot/" {
			t.Errorf("%s belongs to the image's user; only its home should", path)
		}
	}
	if h := headers["usr/local/bin/sigil"]; h == nil || h.Uid != 0 || h.Gid != 0 || h.Mode != 0o755 {
		t.Fatalf("usr/local/bin/sigil header %+v, want root-owned 0755", h)
	}
	if got, err := os.ReadFile(filepath.Join(rootDir, "etc/ssl/certs/ca-certificates.crt")); err != nil || !bytes.Equal(got, certs) {
		t.Errorf("etc/ssl/certs/ca-certificates.crt in the image is not --ca-certs (%v)", err)
	}
	if got, err := os.ReadFile(filepath.Join(rootDir, "etc/passwd")); err != nil || !strings.Contains(string(got), "nonroot:x:65532:65532:") {
		t.Errorf("etc/passwd does not name uid 65532: %q (%v)", got, err)
	}
	bin := filepath.Join(rootDir, "usr/local/bin/sigil")
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	var ver struct {
		Version  string `json:"version"`
		Commit   string `json:"commit"`
		Modified bool   `json:"modified"`
	}
	if err := json.Unmarshal(out, &ver); err != nil {
		t.Fatalf("sigil version -o json: %v\n%s", err, out)
	}
	revision := ver.Commit
	if ver.Modified {
		revision += "-dirty"
	}
	if labels["org.opencontainers.image.version"] != ver.Version || labels["org.opencontainers.image.revision"] != revision {
		t.Errorf("labels say version %q revision %q; the binary says %q %q",
			labels["org.opencontainers.image.version"], labels["org.opencontainers.image.revision"], ver.Version, revision)
	}

	// Static, and go-containerregistry stays out of sigil.
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["GOOS"] != "linux" || settings["-trimpath"] != "true" {
		t.Errorf("sigil built with %v; want CGO_ENABLED=0 GOOS=linux -trimpath", settings)
	}
	for _, dep := range bi.Deps {
		if strings.HasPrefix(dep.Path, "github.com/google/go-containerregistry") {
			t.Errorf("sigil links %s, which only hack/image should", dep.Path)
		}
	}

	// The docker-archive holds the same config and layer under the tag (its
	// manifest is docker's, so the manifest digest is not the layout's).
	tag, err := name.NewTag(DefaultTag)
	if err != nil {
		t.Fatal(err)
	}
	timg, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("read tarball as %s: %v", tag, err)
	}
	tmf, err := timg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if tmf.Config.Digest != mf.Config.Digest || len(tmf.Layers) != 1 || tmf.Layers[0].Digest != mf.Layers[0].Digest {
		t.Errorf("tarball holds config %s layers %+v; the layout config %s layer %s",
			tmf.Config.Digest, tmf.Layers, mf.Config.Digest, mf.Layers[0].Digest)
	}

	// Reproducible: a second build is the same, byte for byte.
	ociDir2, tarPath2, line2 := build("two")
	if line2 != line {
		t.Errorf("second build printed %q, first %q", line2, line)
	}
	for _, pair := range [][2]string{
		{filepath.Join(ociDir, "index.json"), filepath.Join(ociDir2, "index.json")},
		{tarPath, tarPath2},
	} {
		if a, b := sha256File(t, pair[0]), sha256File(t, pair[1]); a != b {
			t.Errorf("%s and %s differ", pair[0], pair[1])
		}
	}
}

// TestRefusals: bad input stops before anything is built or written.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("not.pem", "hello\n")
	keyPEM := write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	full := filepath.Join(dir, "full")
	if err := os.Mkdir(full, 0o755); err != nil {
		t.Fatal(err)
	}
	write("full/keep", "x")
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no output", nil, "nothing to write"},
		{"stray argument", []string{"--tar", out + ".tar", "extra"}, "unexpected arguments"},
		{"bad tag", []string{"--tar", out + ".tar", "--tag", "Not A Ref"}, "tag \"Not A Ref\""},
		{"bad arch", []string{"--tar", out + ".tar", "--arch", "amd64;rm"}, "arch \"amd64;rm\""},
		{"ca certs missing", []string{"--tar", out + ".tar", "--ca-certs", filepath.Join(dir, "none.pem")}, "no such file"},
		{"ca certs not pem", []string{"--tar", out + ".tar", "--ca-certs", notPEM}, "no PEM certificate"},
		{"ca certs with a key", []string{"--tar", out + ".tar", "--ca-certs", keyPEM}, "want certificates only"},
		{"layout dir not empty", []string{"--oci", full}, "exists and is not empty"},
		{"unknown flag", []string{"--push", "x"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("run(%q) succeeded: %s", tc.args, stdout.String())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q): %v; want %q", tc.args, err, tc.want)
			}
			if _, err := os.Stat(out + ".tar"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused run wrote %s.tar (%v)", out, err)
			}
		})
	}
	if names, _ := os.ReadDir(full); len(names) != 1 {
		t.Fatalf("the refused layout dir changed: %v", names)
	}
}

// unpack extracts a layer into dir, refusing anything but plain files and
// directories inside it, and returns the headers by name.
func unpack(t *testing.T, l v1.Layer, dir string) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	headers := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return headers
		}
		if err != nil {
			t.Fatalf("layer tar: %v", err)
		}
		clean := filepath.Clean(h.Name)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			t.Fatalf("layer entry %q leaves the root", h.Name)
		}
		headers[h.Name] = h
		p := filepath.Join(dir, clean)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("layer entry %q has type %c; want files and directories only", h.Name, h.Typeflag)
		}
	}
}

func sha256File(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}
