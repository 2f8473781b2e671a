package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Selector
		wantErr string
	}{
		{name: "unix uid", in: "unix:uid:1000", want: Selector{"unix", "uid:1000"}},
		{name: "k8s label", in: "k8s:pod-label:app:cart", want: Selector{"k8s", "pod-label:app:cart"}},
		{name: "path", in: "unix:path:/usr/bin/app", want: Selector{"unix", "path:/usr/bin/app"}},
		{name: "no colon", in: "unixuid", wantErr: "want type:value"},
		{name: "empty type", in: ":uid:1", wantErr: "empty type"},
		{name: "empty value", in: "unix:", wantErr: "empty value"},
		{name: "upper type", in: "Unix:uid:1", wantErr: "type may hold only"},
		{name: "control char", in: "unix:uid:1\n", wantErr: "control character"},
		{name: "spaces", in: "unix: uid:1", wantErr: "surrounding spaces"},
		{name: "too long", in: "unix:" + strings.Repeat("a", MaxLen), wantErr: "longer than"},
		{name: "bad utf8", in: "unix:\xff", wantErr: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestSuperset(t *testing.T) {
	set := NewSet(Selector{"unix", "uid:1000"}, Selector{"unix", "gid:1000"})
	tests := []struct {
		name     string
		required []Selector
		want     bool
	}{
		{"all present", []Selector{{"unix", "uid:1000"}}, true},
		{"both present", []Selector{{"unix", "uid:1000"}, {"unix", "gid:1000"}}, true},
		{"one missing", []Selector{{"unix", "uid:1000"}, {"unix", "user:bob"}}, false},
		{"wrong uid", []Selector{{"unix", "uid:0"}}, false},
		{"empty never matches", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := set.Superset(tt.required); got != tt.want {
				t.Fatalf("Superset = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseAllNormalizes(t *testing.T) {
	got, err := ParseAll([]string{"unix:uid:2", "unix:gid:1", "unix:uid:2"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "unix:gid:1,unix:uid:2"; strings.Join(Strings(got), ",") != want {
		t.Fatalf("got %v, want %s", Strings(got), want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"unix:uid:1000", "k8s:ns:shop", ":", "a:b", "unix:\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		if sel.Validate() != nil {
			t.Fatalf("parsed selector %q does not validate", s)
		}
		again, err := Parse(sel.String())
		if err != nil || again != sel {
			t.Fatalf("round trip of %q: %v, %#v", s, err, again)
		}
	})
}
