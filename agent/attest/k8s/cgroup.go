package k8s

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/sigilhq/sigil/agent/attest"
)

// ErrNotInPod is wrapped when a process's cgroups name no Kubernetes pod:
// the process is not a pod's workload, and only other attestors apply. It
// matches attest.ErrNotApplicable.
var ErrNotInPod error = notInPod{}

type notInPod struct{}

func (notInPod) Error() string        { return "not in a pod" }
func (notInPod) Is(target error) bool { return target == attest.ErrNotApplicable }

// maxCgroupBytes bounds how much of /proc/PID/cgroup is read and parsed.
// A real file holds at most a few dozen lines.
const maxCgroupBytes = 64 << 10

// Container names a container by its pod's UID and its runtime ID (the
// hex ID, without a "containerd://" style scheme).
type Container struct {
	PodUID      string
	ContainerID string
}

// ParseCgroup finds the pod UID and container ID in the content of
// /proc/PID/cgroup, cgroup v1 (one line per hierarchy) or v2 ("0::/path"),
// as written by the kubelet with the systemd or cgroupfs driver for
// containerd, CRI-O and Docker:
//
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
//	/kubepods/besteffort/pod<uid>/<id>
//	.../crio-<id>.scope, .../docker-<id>.scope
//
// A file whose cgroups name no pod yields an error wrapping ErrNotInPod.
// A process in a pod's cgroup but in no container of it (a conmon
// process, the pod cgroup itself), and a file whose lines name different
// pods or containers, yield other errors.
func ParseCgroup(data []byte) (Container, error) {
	if len(data) > maxCgroupBytes {
		return Container{}, fmt.Errorf("cgroup file longer than %d bytes", maxCgroupBytes)
	}
	var found Container
	podOnly := ""
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		// hierarchy-ID:controller-list:cgroup-path; the path may hold colons.
		parts := bytes.SplitN(line, []byte{':'}, 3)
		if len(parts) != 3 {
			return Container{}, fmt.Errorf("cgroup line %q: want hierarchy:controllers:path", truncate(line))
		}
		c, inPod, err := parsePath(string(parts[2]))
		if err != nil {
			return Container{}, err
		}
		if !inPod {
			continue
		}
		if c.ContainerID == "" {
			if podOnly != "" && podOnly != c.PodUID {
				return Container{}, fmt.Errorf("cgroup lines name two pods, %s and %s", podOnly, c.PodUID)
			}
			podOnly = c.PodUID
			continue
		}
		if found != (Container{}) && found != c {
			return Container{}, fmt.Errorf("cgroup lines name two containers, %s/%s and %s/%s", found.PodUID, found.ContainerID, c.PodUID, c.ContainerID)
		}
		found = c
	}
	switch {
	case found != (Container{}) && podOnly != "" && podOnly != found.PodUID:
		return Container{}, fmt.Errorf("cgroup lines name two pods, %s and %s", podOnly, found.PodUID)
	case found != (Container{}):
		return found, nil
	case podOnly != "":
		return Container{}, fmt.Errorf("process is in pod %s but in none of its containers' cgroups", podOnly)
	}
	return Container{}, ErrNotInPod
}

// parsePath looks for a pod segment in a cgroup path and, right below it,
// a container segment. inPod is false when the path names no pod.
func parsePath(path string) (c Container, inPod bool, err error) {
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		uid, ok := podSegment(seg)
		if !ok {
			continue
		}
		c.PodUID = uid
		if i+1 < len(segs) {
			id, ok := containerSegment(segs[i+1])
			if ok {
				c.ContainerID = id
			}
		}
		return c, true, nil
	}
	return Container{}, false, nil
}

// podSegment recognizes "pod<uid>" (cgroupfs) and
// "kubepods[-<qos>]-pod<uid with _>.slice" (systemd, possibly with a
// prefix such as "kubelet-" when nested).
func podSegment(seg string) (string, bool) {
	if s, ok := strings.CutSuffix(seg, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if i < 0 || !strings.Contains(s[:i], "kubepods") {
			return "", false
		}
		u := s[i+len("-pod"):]
		if strings.Contains(u, "-") {
			return "", false // systemd escapes every '-' of the UID as '_'
		}
		return podUID(strings.ReplaceAll(u, "_", "-"))
	}
	s, ok := strings.CutPrefix(seg, "pod")
	if !ok {
		return "", false
	}
	return podUID(s)
}

// podUID accepts a lowercase RFC 4122 style UID (8-4-4-4-12 hex).
func podUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return "", false
			}
		default:
			if !isLowerHex(s[i]) {
				return "", false
			}
		}
	}
	return s, true
}

// containerSegment recognizes a container's cgroup: "<id>" (cgroupfs,
// containerd and Docker), "crio-<id>" (CRI-O, cgroupfs), and
// "cri-containerd-<id>.scope", "crio-<id>.scope", "docker-<id>.scope"
// (systemd). The ID is 64 lowercase hex digits. CRI-O's
// "crio-conmon-<id>.scope" holds the monitor, not the container.
func containerSegment(seg string) (string, bool) {
	s := strings.TrimSuffix(seg, ".scope")
	for _, prefix := range []string{"cri-containerd-", "crio-", "docker-"} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			s = rest
			break
		}
	}
	if len(s) != 64 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return "", false
		}
	}
	return s, true
}

func isLowerHex(b byte) bool { return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' }

func truncate(b []byte) string {
	const n = 80
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
