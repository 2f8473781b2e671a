package envoy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/sigilhq/sigil/internal/envoytest"

	// Every extension the configurations use, so that their Anys resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// load reads an Envoy bootstrap as Envoy does from YAML: YAML to JSON,
// JSON to the v3 Bootstrap proto (unknown fields and unknown Any types are
// errors), then validation of every message including those inside Anys,
// then a check that every cluster the file names is defined.
func load(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml to json: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("decode bootstrap: %w", err)
	}
	if err := envoytest.Validate(b); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	defined := map[string]bool{}
	for _, c := range b.GetStaticResources().GetClusters() {
		defined[c.GetName()] = true
	}
	for _, ref := range clusterRefs(doc) {
		if !defined[ref] {
			return nil, fmt.Errorf("cluster %q is used but not defined", ref)
		}
	}
	return b, nil
}

// clusterRefs finds every "cluster" and "cluster_name" string value
// outside the node section.
func clusterRefs(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if k == "node" { // node.cluster is Envoy's own service cluster name
				continue
			}
			if s, ok := x.(string); ok && (k == "cluster" || k == "cluster_name") {
				out = append(out, s)
				continue
			}
			out = append(out, clusterRefs(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, clusterRefs(x)...)
		}
	}
	return out
}

func TestEveryConfigIsAValidBootstrap(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.yaml in deploy/envoy")
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			b, err := load(f)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			checkSidecar(t, b)
		})
	}
}

// checkSidecar asserts what the README promises of a sidecar bootstrap.
func checkSidecar(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	js, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"pipe":{"path":"/run/sigil/agent.sock"}`,
		`"http2ProtocolOptions":{}`,
		`"requireClientCertificate":true`,
		`"name":"default"`,
		`"name":"ALL"`,
		`"name":"ROOTCA"`,
		`"sanType":"URI"`,
		`"includePeerCertificate":true`,
		`"transportApiVersion":"V3"`,
		`"portValue":9191`,
		`DownstreamTlsContext`,
		`UpstreamTlsContext`,
	} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("bootstrap lacks %s", want)
		}
	}
}

// TestBrokenConfigsAreRefused makes sure the check above can fail, in each
// of the ways it looks: each file in testdata/broken is a copy of a good
// config with one mistake, named in the file's first line.
func TestBrokenConfigsAreRefused(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"unknown-field.yaml", "unknown field"},
		{"unknown-extension.yaml", "unable to resolve"},
		{"invalid-inside-any.yaml", "StatPrefix"},
		{"undefined-cluster.yaml", `cluster "sigil_agnet" is used but not defined`},
		{"not-yaml.yaml", "yaml"},
	}
	files, _ := filepath.Glob("testdata/broken/*.yaml")
	var listed []string
	for _, tt := range tests {
		listed = append(listed, filepath.Join("testdata/broken", tt.file))
		t.Run(tt.file, func(t *testing.T) {
			_, err := load(filepath.Join("testdata/broken", tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("load: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	slices.Sort(listed)
	if !slices.Equal(files, listed) {
		t.Errorf("testdata/broken holds %v, the table %v", files, listed)
	}
}

// TestShallowValidationMissesAny shows why load walks into every Any: the
// generated ValidateAll accepts a bootstrap whose listener filter is
// invalid.
func TestShallowValidationMissesAny(t *testing.T) {
	raw, err := os.ReadFile("testdata/broken/invalid-inside-any.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(doc)
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll now descends into Any (%v): the deep walk may be redundant", err)
	}
	if err := envoytest.Validate(b); err == nil {
		t.Fatal("deep validation accepted an empty stat_prefix")
	}
}
