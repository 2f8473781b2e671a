package k8s_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/attest/k8s"
	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/kubetest"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// selfInfo returns the peer credentials of a unix connection this test
// process made to itself, so that Check holds while the test runs.
func selfInfo(t testing.TB) peercred.Info {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn, ai, err := peercred.NewCredentials().ServerHandshake(server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ai.(peercred.Info)
}

// fakeProc is a proc root holding only this process's cgroup file.
type fakeProc struct {
	dir  string
	file string
}

func newFakeProc(t testing.TB) *fakeProc {
	dir := t.TempDir()
	pd := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(pd, 0o755); err != nil {
		t.Fatal(err)
	}
	return &fakeProc{dir: dir, file: filepath.Join(pd, "cgroup")}
}

// put places this process in the container's cgroup (cgroup v2, systemd
// driver, containerd), as the kubelet would.
func (p *fakeProc) put(t testing.TB, podUID, ctrID string) {
	t.Helper()
	line := fmt.Sprintf("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod%s.slice/cri-containerd-%s.scope\n",
		strings.ReplaceAll(podUID, "-", "_"), ctrID)
	if err := os.WriteFile(p.file, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func containerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// startAttestor runs an attestor for node until the test ends and waits
// for its watch to sync.
func startAttestor(t testing.TB, c *kubetest.Cluster, node string, cfg k8s.Config) *k8s.Attestor {
	t.Helper()
	cfg.Client, cfg.NodeName = c.Client, node
	a, err := k8s.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(30 * time.Second)
	for !a.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("pod watch did not sync in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a
}

func TestAttestPods(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t, "k8satt")
	c.ServiceAccount(t, ns, "cart")
	node := "node-" + ns
	proc := newFakeProc(t)
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	a := startAttestor(t, c, node, k8s.Config{ProcDir: proc.dir, Clock: fake})
	info := selfInfo(t)

	running := func(t *testing.T, name string, labels map[string]string) (uid, ctr string) {
		t.Helper()
		pod := c.Pod(t, ns, name, "cart", node, labels)
		ctr = containerID()
		c.SetContainerID(t, ns, name, map[string]string{"app": "containerd://" + ctr})
		return string(pod.UID), ctr
	}
	// attest runs Attest in the background, so that a test can move the
	// fake clock or the API server while it waits.
	attestBg := func(a attest.Attestor) <-chan result {
		ch := make(chan result, 1)
		go func() {
			sels, err := a.Attest(context.Background(), info)
			ch <- result{selector.Strings(sels), err}
		}()
		return ch
	}
	// refusedAfterWait expects the attestation to wait on the fake clock
	// and be refused once the wait is over.
	refusedAfterWait := func(t *testing.T, why string) {
		t.Helper()
		before := a.Stats()
		ch := attestBg(a)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := fake.WaitTimers(ctx, 1); err != nil {
			t.Fatal("Attest did not start waiting")
		}
		select {
		case r := <-ch:
			t.Fatalf("Attest returned before its wait: %v, %v", r.sels, r.err)
		case <-time.After(100 * time.Millisecond):
		}
		fake.Advance(k8s.DefaultWait)
		r := wait(t, ch)
		if !errors.Is(r.err, k8s.ErrRefused) || !strings.Contains(r.err.Error(), why) || !strings.Contains(r.err.Error(), "after waiting 5s") {
			t.Fatalf("Attest = %v, %v; want refused after the wait, saying %q", r.sels, r.err, why)
		}
		if after := a.Stats(); after.Waited != before.Waited+1 || after.Refused != before.Refused+1 {
			t.Fatalf("stats went from %+v to %+v", before, after)
		}
	}

	t.Run("running container", func(t *testing.T) {
		uid, ctr := running(t, "web-1", map[string]string{"app": "cart", "tier": "web", "canary": ""})
		proc.put(t, uid, ctr)
		want := []string{
			"k8s:container-image:example.org/app:1", "k8s:container-name:app", "k8s:node-name:" + node,
			"k8s:ns:" + ns, "k8s:pod-label:app:cart", "k8s:pod-label:canary:", "k8s:pod-label:tier:web", "k8s:pod-name:web-1",
			"k8s:pod-uid:" + uid, "k8s:sa:cart",
		}
		r := wait(t, attestBg(a))
		if r.err != nil || !slices.Equal(r.sels, want) {
			t.Fatalf("Attest =\n%v, %v\nwant\n%v", r.sels, r.err, want)
		}
		// Beside the unix attestor, the caller has the selectors of both.
		u, err := unix.New(unix.Config{})
		if err != nil {
			t.Fatal(err)
		}
		r = wait(t, attestBg(attest.Chain{u, a}))
		uidSel := "unix:uid:" + strconv.Itoa(os.Getuid())
		if r.err != nil || !slices.Contains(r.sels, uidSel) || !slices.Contains(r.sels, "k8s:sa:cart") {
			t.Fatalf("unix + k8s = %v, %v; want %s and k8s:sa:cart among them", r.sels, r.err, uidSel)
		}
	})

	// Every selector made has a key the selector type table can list.
	t.Run("keys", func(t *testing.T) {
		uid, ctr := running(t, "keys-1", map[string]string{"a": "b"})
		proc.put(t, uid, ctr)
		r := wait(t, attestBg(a))
		if r.err != nil {
			t.Fatal(r.err)
		}
		seen := map[string]bool{}
		for _, s := range r.sels {
			key, _, _ := strings.Cut(strings.TrimPrefix(s, "k8s:"), ":")
			if !slices.Contains(k8s.SelectorKeys(), key) {
				t.Errorf("selector %s has a key SelectorKeys does not list", s)
			}
			seen[key] = true
		}
		for _, k := range k8s.SelectorKeys() {
			if !seen[k] {
				t.Errorf("SelectorKeys lists %s, which Attest did not make", k)
			}
		}
	})

	t.Run("not in a pod", func(t *testing.T) {
		if err := os.WriteFile(proc.file, []byte("0::/user.slice/user-1000.slice/session-3.scope\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := wait(t, attestBg(a))
		if !errors.Is(r.err, k8s.ErrNotInPod) || !errors.Is(r.err, attest.ErrNotApplicable) {
			t.Fatalf("Attest = %v, %v; want ErrNotInPod", r.sels, r.err)
		}
		u, err := unix.New(unix.Config{})
		if err != nil {
			t.Fatal(err)
		}
		r = wait(t, attestBg(attest.Chain{u, a}))
		if r.err != nil || len(r.sels) == 0 || slices.ContainsFunc(r.sels, func(s string) bool { return strings.HasPrefix(s, "k8s:") }) {
			t.Fatalf("unix + k8s for a host process = %v, %v; want unix selectors only", r.sels, r.err)
		}
	})

	t.Run("container starts before the watch sees it", func(t *testing.T) {
		pod := c.Pod(t, ns, "web-2", "cart", node, nil)
		ctr := containerID()
		proc.put(t, string(pod.UID), ctr)
		ch := attestBg(a)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := fake.WaitTimers(ctx, 1); err != nil {
			t.Fatal("Attest did not wait for the container")
		}
		c.SetContainerID(t, ns, "web-2", map[string]string{"app": "cri-o://" + ctr})
		r := wait(t, ch)
		if r.err != nil || !slices.Contains(r.sels, "k8s:pod-name:web-2") {
			t.Fatalf("Attest = %v, %v; want web-2's selectors once its status names the container", r.sels, r.err)
		}
	})

	t.Run("unknown pod is waited for, then refused", func(t *testing.T) {
		uid := newUID()
		proc.put(t, uid, containerID())
		refusedAfterWait(t, "pod "+uid+" is not on node "+node)
	})

	t.Run("unknown container is waited for, then refused", func(t *testing.T) {
		uid, _ := running(t, "web-3", nil)
		other := containerID()
		proc.put(t, uid, other)
		refusedAfterWait(t, "container "+other+" is not in the status of pod "+ns+"/web-3")
	})

	t.Run("pod on another node is not seen", func(t *testing.T) {
		pod := c.Pod(t, ns, "elsewhere", "cart", node+"-b", nil)
		ctr := containerID()
		c.SetContainerID(t, ns, "elsewhere", map[string]string{"app": "containerd://" + ctr})
		proc.put(t, string(pod.UID), ctr)
		refusedAfterWait(t, "is not on node "+node)
	})

	t.Run("deleted pod is refused at once", func(t *testing.T) {
		uid, ctr := running(t, "web-4", nil)
		proc.put(t, uid, ctr)
		if r := wait(t, attestBg(a)); r.err != nil {
			t.Fatalf("before deletion: %v", r.err)
		}
		// Grace period 0: what the kubelet sends once the containers have
		// stopped (there is no kubelet here to finish a graceful delete).
		zero := int64(0)
		if err := c.Client.CoreV1().Pods(ns).Delete(context.Background(), "web-4", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			// No fake-clock advance: a deleted pod is refused without a wait.
			r := wait(t, attestBg(a))
			if r.err != nil {
				if !errors.Is(r.err, k8s.ErrRefused) || !strings.Contains(r.err.Error(), "pod "+uid+" was deleted") {
					t.Fatalf("after deletion: %v; want refused as deleted", r.err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("deleted pod still attested after 20 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// An open stream's watch wakes when its pod's identity changes (labels)
// or the pod is deleted, and not for status-only changes; attesting again
// then gives the new selectors, or refuses at once. Metrics count it all.
func TestWatchForStreams(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t, "k8swatch")
	c.ServiceAccount(t, ns, "cart")
	node := "node-" + ns
	proc := newFakeProc(t)
	reg := prometheus.NewRegistry()
	a := startAttestor(t, c, node, k8s.Config{ProcDir: proc.dir, Metrics: reg})
	info := selfInfo(t)
	ctx := context.Background()

	running := func(name string) (uid, ctr string) {
		pod := c.Pod(t, ns, name, "cart", node, map[string]string{"app": "cart"})
		ctr = containerID()
		c.SetContainerID(t, ns, name, map[string]string{"app": "containerd://" + ctr})
		return string(pod.UID), ctr
	}
	closedWithin := func(ch <-chan struct{}, d time.Duration) bool {
		select {
		case <-ch:
			return true
		case <-time.After(d):
			return false
		}
	}
	relabel := func(name, value string) {
		patch := []byte(`{"metadata":{"labels":{"app":"` + value + `"}}}`)
		if _, err := c.Client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Watch before attesting, as a stream does; wait for the watch to
	// show the container.
	attested := func() ([]string, error) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			sels, err := a.Attest(ctx, info)
			if err == nil || !errors.Is(err, k8s.ErrRefused) || time.Now().After(deadline) {
				return selector.Strings(sels), err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Processes outside pods get no watch.
	if err := os.WriteFile(proc.file, []byte("0::/user.slice/user-0.slice/session-1.scope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ch, stop := a.Watch(info); ch != nil {
		t.Fatal("a host process got a pod watch")
	} else {
		stop()
	}

	// settle returns once the attestor's handlers have seen every event
	// so far: they see events in order, and a new pod's status update,
	// made now, wakes a watch on it.
	settles := 0
	settle := func() {
		settles++
		name := "settle-" + strconv.Itoa(settles)
		pod := c.Pod(t, ns, name, "cart", node, nil)
		proc.put(t, string(pod.UID), containerID())
		ch, stop := a.Watch(info)
		defer stop()
		c.SetContainerID(t, ns, name, map[string]string{"app": "containerd://" + containerID()})
		if !closedWithin(ch, 20*time.Second) {
			t.Fatal("a new pod's status update did not wake its watch in 20 s")
		}
	}

	uid, ctr := running("web-1")
	settle()
	proc.put(t, uid, ctr)
	ch, stop := a.Watch(info)
	defer func() { stop() }()
	if sels, err := attested(); err != nil || !slices.Contains(sels, "k8s:pod-label:app:cart") {
		t.Fatalf("Attest = %v, %v", sels, err)
	}
	if got := value(t, reg, "sigil_k8s_attestor_stream_watches", ""); got != 1 {
		t.Fatalf("stream watches %v, want 1", got)
	}

	// A status-only change (the kubelet rewriting readiness and start
	// times) does not wake the stream.
	c.SetContainerID(t, ns, "web-1", map[string]string{"app": "containerd://" + ctr})
	settle()
	if closedWithin(ch, 0) {
		t.Fatal("a status-only change woke the stream")
	}
	proc.put(t, uid, ctr)

	// Relabelled: the stream wakes and attests to the new label.
	relabel("web-1", "till")
	if !closedWithin(ch, 20*time.Second) {
		t.Fatal("relabelling the pod did not wake its stream in 20 s")
	}
	stop()
	ch, stop = a.Watch(info)
	if sels, err := attested(); err != nil || !slices.Contains(sels, "k8s:pod-label:app:till") || slices.Contains(sels, "k8s:pod-label:app:cart") {
		t.Fatalf("after relabelling: Attest = %v, %v", sels, err)
	}

	// Deleted: the stream wakes and is refused at once.
	zero := int64(0)
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(ch, 20*time.Second) {
		t.Fatal("deleting the pod did not wake its stream in 20 s")
	}
	start := time.Now()
	if _, err := a.Attest(ctx, info); !errors.Is(err, k8s.ErrRefused) || !errors.Is(err, attest.ErrRefused) || !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("after deletion: %v; want refused as deleted", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusing the deleted pod's process took %s: it waited", d)
	}
	stop()

	for _, want := range []struct {
		name, label string
		min         float64
	}{
		{"sigil_k8s_attestor_stream_wakes_total", "deleted", 1},
		{"sigil_k8s_attestor_stream_wakes_total", "changed", 2},
		{"sigil_k8s_attestor_attestations_total", "ok", 2},
		{"sigil_k8s_attestor_attestations_total", "refused", 1},
		{"sigil_k8s_attestor_pods_cached", "", 1},
	} {
		if got := value(t, reg, want.name, want.label); got < want.min {
			t.Errorf("%s{%s} = %v, want at least %v", want.name, want.label, got, want.min)
		}
	}
	if got := value(t, reg, "sigil_k8s_attestor_stream_watches", ""); got != 0 {
		t.Errorf("stream watches %v after every stop, want 0", got)
	}
}

// value reads a counter or gauge from reg by name (and, if label is not
// empty, by the value of its one label); 0 if absent.
func value(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

type result struct {
	sels []string
	err  error
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Attest did not return in 20 s")
		return result{}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	c := kubetest.Start(t)
	for _, tt := range []struct {
		name string
		cfg  k8s.Config
		want string
	}{
		{"no client", k8s.Config{NodeName: "a"}, "no kubernetes client"},
		{"no node", k8s.Config{Client: c.Client}, "node name is empty"},
		{"negative wait", k8s.Config{Client: c.Client, NodeName: "a", Wait: -time.Second}, "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := k8s.New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// The CA refuses entries whose selectors no attestor makes; its table of
// k8s keys must be the keys this attestor makes.
func TestSelectorKeysMatchCATable(t *testing.T) {
	var table []string
	for _, k := range selector.K8s().Keys {
		table = append(table, k.Key)
	}
	if got := k8s.SelectorKeys(); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(table))) {
		t.Fatalf("attestor keys %v, internal/selector.K8s() keys %v", got, table)
	}
}
