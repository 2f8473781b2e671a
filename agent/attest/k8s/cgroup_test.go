package k8s_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/attest/k8s"
)

const (
	fixturePod = "2c48913c-b29f-11e7-9350-020968147796"
	fixtureCtr = "9b6a3d2c1f0e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c"
)

// The recorded cgroup files: each cgroup version × runtime × driver names
// the same container; processes outside pods are not in a pod; a pod's
// process outside its containers is an error, not "not in a pod".
func TestParseCgroupFiles(t *testing.T) {
	want := k8s.Container{PodUID: fixturePod, ContainerID: fixtureCtr}
	tests := []struct {
		file     string
		notInPod bool
		errPart  string
	}{
		{file: "v1-containerd-cgroupfs.txt"},
		{file: "v1-containerd-systemd.txt"},
		{file: "v1-crio-cgroupfs.txt"},
		{file: "v1-crio-systemd.txt"},
		{file: "v1-docker-cgroupfs.txt"},
		{file: "v1-docker-systemd.txt"},
		{file: "v2-containerd-cgroupfs.txt"},
		{file: "v2-containerd-systemd.txt"},
		{file: "v2-crio-cgroupfs.txt"},
		{file: "v2-crio-systemd.txt"},
		{file: "v2-docker-cgroupfs.txt"},
		{file: "v2-docker-systemd.txt"},
		{file: "v2-kind-nested.txt"},
		{file: "v2-cgroupns-relative.txt"},
		{file: "v2-crio-conmon.txt", errPart: "in none of its containers"},
		{file: "v2-pod-level.txt", errPart: "in none of its containers"},
		{file: "v1-host-session.txt", notInPod: true},
		{file: "v1-sandbox-host.txt", notInPod: true},
		{file: "v2-host-user.txt", notInPod: true},
		{file: "v2-docker-not-kubernetes.txt", notInPod: true},
		{file: "v2-init.txt", notInPod: true},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(strings.TrimSuffix(tt.file, ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "cgroup", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := k8s.ParseCgroup(data)
			switch {
			case tt.notInPod:
				if !errors.Is(err, k8s.ErrNotInPod) {
					t.Fatalf("ParseCgroup = %+v, %v; want ErrNotInPod", got, err)
				}
			case tt.errPart != "":
				if err == nil || errors.Is(err, k8s.ErrNotInPod) || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ParseCgroup = %+v, %v; want an error containing %q", got, err, tt.errPart)
				}
			default:
				if err != nil || got != want {
					t.Fatalf("ParseCgroup = %+v, %v; want %+v", got, err, want)
				}
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "cgroup", "*.txt"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s has no case in the table", f)
		}
	}
}

func TestParseCgroupInline(t *testing.T) {
	pod2 := "11111111-2222-3333-4444-555555555555"
	ctr2 := strings.Repeat("0f", 32)
	tests := []struct {
		name    string
		in      string
		want    k8s.Container
		errPart string
	}{
		{name: "empty", in: "", errPart: "not in a pod"},
		{name: "guaranteed cgroupfs", in: "0::/kubepods/pod" + fixturePod + "/" + fixtureCtr + "\n", want: k8s.Container{PodUID: fixturePod, ContainerID: fixtureCtr}},
		{name: "sub-cgroup inside the container", in: "0::/kubepods/pod" + fixturePod + "/" + fixtureCtr + "/worker\n", want: k8s.Container{PodUID: fixturePod, ContainerID: fixtureCtr}},
		{name: "no trailing newline", in: "0::/kubepods/pod" + fixturePod + "/" + fixtureCtr, want: k8s.Container{PodUID: fixturePod, ContainerID: fixtureCtr}},
		{name: "two containers", in: "1:cpu:/kubepods/pod" + fixturePod + "/" + fixtureCtr + "\n0::/kubepods/pod" + fixturePod + "/" + ctr2 + "\n", errPart: "two containers"},
		{name: "two pods", in: "1:cpu:/kubepods/pod" + fixturePod + "/" + fixtureCtr + "\n0::/kubepods/pod" + pod2 + "\n", errPart: "two pods"},
		{name: "two pod-level lines", in: "1:cpu:/kubepods/pod" + fixturePod + "\n0::/kubepods/pod" + pod2 + "\n", errPart: "two pods"},
		{name: "line without fields", in: "garbage\n", errPart: "want hierarchy:controllers:path"},
		{name: "uppercase uid", in: "0::/kubepods/pod" + strings.ToUpper(fixturePod) + "/" + fixtureCtr, errPart: "not in a pod"},
		{name: "short container id", in: "0::/kubepods/pod" + fixturePod + "/abc", errPart: "in none of its containers"},
		{name: "slice outside kubepods", in: "0::/system.slice/foo-pod" + strings.ReplaceAll(fixturePod, "-", "_") + ".slice/docker-" + fixtureCtr + ".scope", errPart: "not in a pod"},
		{name: "too long", in: strings.Repeat("0::/\n", 20000), errPart: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k8s.ParseCgroup([]byte(tt.in))
			if tt.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("ParseCgroup = %+v, %v; want an error containing %q", got, err, tt.errPart)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCgroup = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzParseCgroup: any input gives either a well-formed container or an
// error, never a panic; what it returns appears in the input.
func FuzzParseCgroup(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "cgroup", "*.txt"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := k8s.ParseCgroup(data)
		if err != nil {
			if c != (k8s.Container{}) {
				t.Fatalf("error %v with a container %+v", err, c)
			}
			return
		}
		if len(c.PodUID) != 36 || len(c.ContainerID) != 64 {
			t.Fatalf("malformed result %+v", c)
		}
		s := string(data)
		if !strings.Contains(s, c.ContainerID) {
			t.Fatalf("container ID %s not in the input", c.ContainerID)
		}
		if !strings.Contains(s, c.PodUID) && !strings.Contains(s, strings.ReplaceAll(c.PodUID, "-", "_")) {
			t.Fatalf("pod UID %s not in the input", c.PodUID)
		}
	})
}
