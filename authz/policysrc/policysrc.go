package policysrc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"

	"github.com/sigilhq/sigil/authz/engine"
)

// ErrNotModified is returned by sources that know the revision has not
// changed since the last Load.
var ErrNotModified = errors.New("policy not modified")

// Dir loads every *.rego (except *_test.rego) and data.json / data.yaml
// file under a directory, the way `opa run DIR` does.
type Dir struct {
	Path string
}

// IsTestFile reports whether a Rego file holds tests only.
func IsTestFile(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// Load implements a policy source.
func (d Dir) Load(_ context.Context) (engine.Policy, error) {
	st, err := os.Stat(d.Path)
	if err != nil {
		return engine.Policy{}, fmt.Errorf("policy directory: %w", err)
	}
	if !st.IsDir() {
		return engine.Policy{}, fmt.Errorf("policy directory %s is not a directory", d.Path)
	}
	res, err := loader.NewFileLoader().Filtered([]string{d.Path}, func(abspath string, info fs.FileInfo, _ int) bool {
		name := info.Name()
		if strings.HasPrefix(name, ".") && abspath != d.Path {
			return true
		}
		return !info.IsDir() && IsTestFile(name)
	})
	if err != nil {
		return engine.Policy{}, fmt.Errorf("load policies from %s: %w", d.Path, err)
	}
	p := engine.Policy{Modules: make(map[string]string, len(res.Modules)), Data: res.Documents}
	for _, m := range res.Modules {
		name := m.Name
		if rel, err := filepath.Rel(d.Path, m.Name); err == nil {
			name = rel
		}
		p.Modules[name] = string(m.Raw)
	}
	p.Revision = contentRevision(p)
	return p, nil
}

// contentRevision is a short hash of a policy's modules and data.
func contentRevision(p engine.Policy) string {
	h := sha256.New()
	names := make([]string, 0, len(p.Modules))
	for n := range p.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00%s", n, len(p.Modules[n]), p.Modules[n])
	}
	data, _ := json.Marshal(p.Data)
	h.Write(data)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// BundleFile loads an OPA bundle (.tar.gz) from disk.
type BundleFile struct {
	Path string
}

// Load implements a policy source.
func (b BundleFile) Load(_ context.Context) (engine.Policy, error) {
	raw, err := os.ReadFile(b.Path)
	if err != nil {
		return engine.Policy{}, fmt.Errorf("read bundle: %w", err)
	}
	return fromBundle(raw, b.Path)
}

func fromBundle(raw []byte, name string) (engine.Policy, error) {
	bu, err := bundle.NewReader(bytes.NewReader(raw)).Read()
	if err != nil {
		return engine.Policy{}, fmt.Errorf("read bundle %s: %w", name, err)
	}
	p := engine.Policy{Modules: make(map[string]string, len(bu.Modules)), Data: bu.Data}
	for _, m := range bu.Modules {
		if IsTestFile(m.Path) {
			continue
		}
		p.Modules[strings.TrimPrefix(m.Path, "/")] = string(m.Raw)
	}
	p.Revision = bu.Manifest.Revision
	if p.Revision == "" {
		p.Revision = contentRevision(p)
	}
	return p, nil
}

// BundleHTTP fetches an OPA bundle from a URL, using ETags so an unchanged
// bundle is not downloaded again.
type BundleHTTP struct {
	URL    string
	Client *http.Client
	// MaxBytes caps the download (default 64 MiB).
	MaxBytes int64

	mu   sync.Mutex
	etag string
}

// Load implements a policy source; it returns ErrNotModified on 304.
func (b *BundleHTTP) Load(ctx context.Context) (engine.Policy, error) {
	client := b.Client
	if client == nil {
		client = http.DefaultClient
	}
	max := b.MaxBytes
	if max <= 0 {
		max = 64 << 20
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL, nil)
	if err != nil {
		return engine.Policy{}, fmt.Errorf("bundle url: %w", err)
	}
	b.mu.Lock()
	etag := b.etag
	b.mu.Unlock()
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := client.Do(req)
	if err != nil {
		return engine.Policy{}, fmt.Errorf("fetch bundle: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return engine.Policy{}, ErrNotModified
	case http.StatusOK:
	default:
		return engine.Policy{}, fmt.Errorf("fetch bundle: %s", resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return engine.Policy{}, fmt.Errorf("fetch bundle: %w", err)
	}
	if int64(len(raw)) > max {
		return engine.Policy{}, fmt.Errorf("fetch bundle: larger than %d bytes", max)
	}
	p, err := fromBundle(raw, b.URL)
	if err != nil {
		return engine.Policy{}, err
	}
	b.mu.Lock()
	b.etag = resp.Header.Get("ETag")
	b.mu.Unlock()
	return p, nil
}
