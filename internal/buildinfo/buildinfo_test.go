package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want Info
		str  string
	}{
		{
			name: "release",
			bi: debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}},
			want: Info{Version: "v1.2.3", Commit: "abc123", GoVersion: "go1.26.0"},
			str:  "sigil v1.2.3 (commit abc123, go1.26.0)",
		},
		{
			name: "dirty checkout",
			bi: debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"},
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}},
			want: Info{Version: "(devel)", Commit: "abc123", Modified: true, GoVersion: "go1.26.0"},
			str:  "sigil (devel) (commit abc123-dirty, go1.26.0)",
		},
		{
			name: "no vcs stamp",
			bi:   debug.BuildInfo{GoVersion: "go1.26.0"},
			want: Info{Version: "(devel)", Commit: "unknown", GoVersion: "go1.26.0"},
			str:  "sigil (devel) (commit unknown, go1.26.0)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FromBuildInfo(&tc.bi)
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.str {
				t.Fatalf("String() = %q, want %q", got.String(), tc.str)
			}
		})
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Info{Version: "v1", Commit: "c", Modified: true, GoVersion: "go1.26.0"}.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "sigil_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].GetMetric()[0]
	var labels []string
	for _, l := range m.GetLabel() {
		labels = append(labels, l.GetName()+"="+l.GetValue())
	}
	if got, want := strings.Join(labels, ","), "commit=c-dirty,go_version=go1.26.0,version=v1"; got != want || m.GetGauge().GetValue() != 1 {
		t.Fatalf("labels %s value %v, want %s and 1", got, m.GetGauge().GetValue(), want)
	}
	if got := Read(); got.GoVersion == "" || got.Version == "" {
		t.Fatalf("Read() = %+v", got)
	}
}
