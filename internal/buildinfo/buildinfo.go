package buildinfo

import (
	"fmt"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Info describes a build.
type Info struct {
	Version   string `json:"version"`    // module version, "(devel)" in a checkout
	Commit    string `json:"commit"`     // VCS revision, "unknown" without VCS stamping
	Modified  bool   `json:"modified"`   // the working tree had changes
	GoVersion string `json:"go_version"` // toolchain that built the binary
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown", Commit: "unknown", GoVersion: "unknown"}
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo extracts Info from what the Go toolchain stamped.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Version: bi.Main.Version, Commit: "unknown", GoVersion: bi.GoVersion}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is one line: "sigil v1.2.3 (commit abc123, go1.26.0)".
func (i Info) String() string {
	commit := i.Commit
	if i.Modified {
		commit += "-dirty"
	}
	return fmt.Sprintf("sigil %s (commit %s, %s)", i.Version, commit, i.GoVersion)
}

// Collector is the gauge sigil_build_info{version,commit,go_version} = 1.
func (i Info) Collector() prometheus.Collector {
	commit := i.Commit
	if i.Modified {
		commit += "-dirty"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sigil_build_info",
		Help:        "Build of the running Sigil: always 1, with the version, commit and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": commit, "go_version": i.GoVersion},
	})
	g.Set(1)
	return g
}
