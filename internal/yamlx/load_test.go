package yamlx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type testFile struct {
	Name string `yaml:"name"`
}

type testConfig struct{ Name string }

func (f testFile) Validate() (testConfig, error) {
	if f.Name == "" {
		return testConfig{}, errors.New("name: required")
	}
	return testConfig{Name: strings.ToUpper(f.Name)}, nil
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		want    string
		wantErr []string
	}{
		{name: "valid", path: write("ok.yaml", "name: sigil\n"), want: "SIGIL"},
		{name: "unknown key", path: write("unknown.yaml", "name: a\nnmae: b\n"), wantErr: []string{"unknown.yaml", `unknown key "nmae"`}},
		{name: "invalid", path: write("invalid.yaml", "name: ''\n"), wantErr: []string{"invalid.yaml", "name: required"}},
		{name: "missing", path: filepath.Join(dir, "missing.yaml"), wantErr: []string{"read config", "missing.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load[testFile](tt.path)
			if len(tt.wantErr) == 0 {
				if err != nil || got.Name != tt.want {
					t.Fatalf("Load = %+v, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load = %+v, want an error", got)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
