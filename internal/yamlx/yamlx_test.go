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
		{name: "two docs", in: "name: a\n---\nname: b\n", wantErr: "more than one"},
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
