package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestTypesCheck(t *testing.T) {
	types := Builtin()
	digest := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		kind    Kind
		in      string
		wantErr string // empty: accepted
	}{
		{name: "uid", kind: KindWorkload, in: "unix:uid:1000"},
		{name: "gid", kind: KindWorkload, in: "unix:gid:0"},
		{name: "user", kind: KindWorkload, in: "unix:user:sigil-authz"},
		{name: "group", kind: KindWorkload, in: "unix:group:www-data"},
		{name: "supplementary gid", kind: KindWorkload, in: "unix:supplementary_gid:27"},
		{name: "supplementary group", kind: KindWorkload, in: "unix:supplementary_group:docker"},
		{name: "path", kind: KindWorkload, in: "unix:path:/usr/bin/app"},
		{name: "sha256", kind: KindWorkload, in: "unix:sha256:" + digest},
		{name: "unknown type", kind: KindWorkload, in: "foo:bar", wantErr: `no attestor makes "foo" selectors here (workload selector types: k8s, unix)`},
		{name: "k8s ns", kind: KindWorkload, in: "k8s:ns:shop"},
		{name: "k8s pod label", kind: KindWorkload, in: "k8s:pod-label:app:cart"},
		{name: "k8s pod label without value", kind: KindWorkload, in: "k8s:pod-label:app:"},
		{name: "k8s label without key", kind: KindWorkload, in: "k8s:pod-label:app", wantErr: "want a label as KEY:VALUE"},
		{name: "k8s unknown key", kind: KindWorkload, in: "k8s:namespace:shop", wantErr: `has no key "namespace"`},
		{name: "uid not a number", kind: KindWorkload, in: "unix:uid:abc", wantErr: "want a uid in decimal"},
		{name: "uid too large", kind: KindWorkload, in: "unix:uid:4294967296", wantErr: "want a uid in decimal"},
		{name: "uid negative", kind: KindWorkload, in: "unix:uid:-1", wantErr: "want a uid in decimal"},
		{name: "unknown key", kind: KindWorkload, in: "unix:pid:1", wantErr: `has no key "pid" (keys: uid, gid,`},
		{name: "no key", kind: KindWorkload, in: "unix:1000", wantErr: `has no key "1000"`},
		{name: "empty value", kind: KindWorkload, in: "unix:uid:", wantErr: "empty value"},
		{name: "relative path", kind: KindWorkload, in: "unix:path:bin/app", wantErr: "absolute"},
		{name: "unclean path", kind: KindWorkload, in: "unix:path:/usr/../bin/app", wantErr: "absolute, clean"},
		{name: "short sha256", kind: KindWorkload, in: "unix:sha256:abcd", wantErr: "64 lower-case hex"},
		{name: "upper sha256", kind: KindWorkload, in: "unix:sha256:" + strings.ToUpper(digest), wantErr: "64 lower-case hex"},
		{name: "user with colon", kind: KindWorkload, in: "unix:user:a:b", wantErr: "is not a user name"},
		{name: "node selector on a workload", kind: KindWorkload, in: "x509pop:subject:cn:node1", wantErr: "describe nodes and are for node-alias entries"},
		{name: "x509pop cn", kind: KindNode, in: "x509pop:subject:cn:node1"},
		{name: "x509pop serial", kind: KindNode, in: "x509pop:serialnumber:1a2b"},
		{name: "x509pop san", kind: KindNode, in: "x509pop:san:dns:node1.example.org"},
		{name: "x509pop ca", kind: KindNode, in: "x509pop:ca:fingerprint:" + digest},
		{name: "x509pop ca without fingerprint", kind: KindNode, in: "x509pop:ca:" + digest, wantErr: "ca:fingerprint:"},
		{name: "x509pop upper serial", kind: KindNode, in: "x509pop:serialnumber:1A", wantErr: "lower-case hex"},
		{name: "workload selector on a node alias", kind: KindNode, in: "unix:uid:0", wantErr: "describe workloads; a node-alias entry needs node selectors (k8s_psat, x509pop)"},
		{name: "k8s_psat cluster", kind: KindNode, in: "k8s_psat:cluster:prod"},
		{name: "k8s_psat node label", kind: KindNode, in: "k8s_psat:agent_node_label:zone:a"},
		{name: "k8s_psat on a workload", kind: KindWorkload, in: "k8s_psat:cluster:prod", wantErr: "describe nodes"},
		{name: "k8s on a node alias", kind: KindNode, in: "k8s:ns:shop", wantErr: "describe workloads"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			err = types.Check(tt.kind, s)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check(%s, %q) = %v, want nil", tt.kind, tt.in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrUnattestable) {
				t.Fatalf("Check(%s, %q) = %v, want an error containing %q", tt.kind, tt.in, err, tt.wantErr)
			}
		})
	}
}

// TestTypesWith adds an attestor's table, as a new attestor would, and
// leaves the original alone.
func TestTypesWith(t *testing.T) {
	base := Builtin()
	tpm := TypeSpec{Type: "tpm", Kind: KindWorkload, Attestor: "a tpm workload attestor", Keys: []KeySpec{{Key: "pcr"}}}
	ext, err := base.With(tpm)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := Parse("tpm:pcr:7")
	if err := ext.Check(KindWorkload, s); err != nil {
		t.Fatalf("extended table refused %s: %v", s, err)
	}
	if err := base.Check(KindWorkload, s); err == nil {
		t.Fatal("With changed the table it was called on")
	}
	if got := strings.Join(ext.Names(KindWorkload), ","); got != "k8s,tpm,unix" {
		t.Fatalf("Names = %s", got)
	}
	for _, bad := range []TypeSpec{
		Unix(), // twice
		{Type: "x", Kind: "pod", Keys: []KeySpec{{Key: "a"}}},
		{Type: "y", Kind: KindNode},
	} {
		if _, err := ext.With(bad); err == nil {
			t.Errorf("With(%+v) accepted", bad)
		}
	}
	if _, err := NewTypes(Unix(), X509PoP()); err != nil {
		t.Fatalf("NewTypes(Unix, X509PoP): %v", err)
	}
}
