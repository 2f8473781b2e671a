package k8s_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigilhq/sigil/agent/attest/k8s"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/kubetest"
)

// benchPods is the kubelet's default maximum number of pods on a node.
const benchPods = 110

// BenchmarkAttest attests a process of one of 110 running pods on the
// node: the cost per attestation (read and parse the cgroup file, check
// the peer, look the pod up by UID, make selectors). It also reports the
// heap the pod watch holds for the 110 pods.
func BenchmarkAttest(b *testing.B) {
	a, info, heap := benchNode(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := a.Attest(context.Background(), info); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(heap, "watch-heap-B/pod") // after the loop: ResetTimer drops reported metrics
}

// BenchmarkStreamWatch is what an open Workload API or SDS stream adds to
// its attestation: Watch before it (read the cgroup file, take a reference
// on the pod's watch) and stop when the stream ends.
func BenchmarkStreamWatch(b *testing.B) {
	a, info, _ := benchNode(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ch, stop := a.Watch(info)
		if ch == nil {
			b.Fatal("no watch for a pod's process")
		}
		stop()
	}
}

// benchNode runs an attestor (with metrics) for a node of 110 running
// pods, this process in the last one's container, and returns the heap
// the pod watch holds per pod.
func benchNode(b *testing.B) (_ *k8s.Attestor, _ peercred.Info, heapPerPod float64) {
	b.Helper()
	c := kubetest.Start(b)
	ns := c.Namespace(b, "k8sbench")
	c.ServiceAccount(b, ns, "app")
	node := "node-" + ns
	var uid, ctr string
	for i := range benchPods {
		name := "pod-" + strconv.Itoa(i)
		pod := c.Pod(b, ns, name, "app", node, map[string]string{"app": "bench", "index": strconv.Itoa(i)})
		ctr = containerID()
		c.SetContainerID(b, ns, name, map[string]string{"app": "containerd://" + ctr})
		uid = string(pod.UID)
	}
	proc := newFakeProc(b)
	proc.put(b, uid, ctr)
	info := selfInfo(b)

	before := heapInUse()
	a := startAttestor(b, c, node, k8s.Config{ProcDir: proc.dir, Metrics: prometheus.NewRegistry()})
	watchHeap := heapInUse() - before
	if _, err := a.Attest(context.Background(), info); err != nil {
		b.Fatal(err)
	}
	return a, info, float64(watchHeap) / benchPods
}

func heapInUse() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
