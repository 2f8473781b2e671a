package yamlx

import (
	"strings"
	"testing"
)

type sample struct {
	Name string `yaml:"name"`
	Sub  struct {
		Port int `yaml:"port"`
	} `yaml:"sub"`
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{name: "ok", in: "name: a\nsub:\n  port: 1\n"},
		{name: "unknown top", in: "name: a\nnmae: b\n", wantErr: `line 2: unknown key "nmae"`},
		{name: "unknown nested", in: "sub:\n  prot: 1\n", wantErr: `line 2: unknown key "prot"`},
		{name: "wrong type", in: "sub:\n  port: abc\n", wantErr: "line 2"},
		{name: "empty", in: "  \n", wantErr: "config is empty"},
		{name: "nothing at all", in: "", wantErr: "config is empty"},
		{name: "only comments", in: "# name: a\n", wantErr: "config is empty"},
		{name: "only a document marker", in: "---\n", wantErr: "config is empty"},
		{name: "null", in: "~\n", wantErr: "config is empty"},
		{name: "two docs", in: "name: a\n---\nname: b\n", wantErr: "config holds 2 YAML documents (the second at line 2); want one"},
		{name: "trailing document marker", in: "name: a\n---\n", wantErr: "config holds 2 YAML documents"},
		{name: "syntax error in a second doc", in: "name: a\n---\nname: [\n", wantErr: "config:"},
		{name: "not a mapping", in: "- name\n", wantErr: "config: line 1: want a mapping"},
		{name: "too large", in: "name: " + strings.Repeat("a", MaxSize) + "\n", wantErr: "larger than"},
		{name: "syntax", in: "name: [\n", wantErr: "config:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			err := DecodeStrict([]byte(tt.in), &s)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
