// Package k8s measures Sigil on a real kube-apiserver: how long a pod
// takes from its creation to its entry in the CA's store and to its
// X509-SVID in a real agent's cache, and the agent's memory with a full
// node of pods. It logs figures and asserts none; at its default size it
// is a small test that keeps the harness from rotting (see the
// "Kubernetes" section of ../README.md).
package k8s

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/kubetest"
)

const (
	td      = "bench.test"
	cluster = "bench"
	// inFlight bounds the pod creations running at once.
	inFlight = 32
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// TestPodToSVID: one `sigil ca run` (SQLite, auto-registration with the
// default identity, k8s_psat) and one `sigil agent run` attesting by
// k8s_psat as the agent of node 0. SIGIL_K8S_BENCH_PODS pods (default 40)
// are created 32 at a time, spread round-robin over as many nodes as
// SIGIL_K8S_BENCH_PER_NODE pods a node (default 110, the kubelet's
// maximum) need, each with a running status and container ID written
// through the status subresource. ../README.md says what is measured.
func TestPodToSVID(t *testing.T) {
	pods := envInt(t, "SIGIL_K8S_BENCH_PODS", 40)
	perNode := envInt(t, "SIGIL_K8S_BENCH_PER_NODE", 110)
	nodes := (pods + perNode - 1) / perNode
	kube := kubetest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sigil, err := e2e.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	applyCRD(t, kube)

	// The agent's pod on node 0 and its projected token.
	agentNS := kube.Namespace(t, "sigil")
	kube.ServiceAccount(t, agentNS, "sigil-agent")
	nodeNames := make([]string, nodes)
	var node0UID string
	for i := range nodeNames {
		nodeNames[i] = fmt.Sprintf("%s-node-%d", agentNS, i)
		uid := kube.Node(t, nodeNames[i], nil)
		if i == 0 {
			node0UID = string(uid)
		}
	}
	agentPod := kube.Pod(t, agentNS, "sigil-agent-0", "sigil-agent", nodeNames[0], nil)
	e2e.WriteFile(t, filepath.Join(dir, "token"), kube.PodToken(t, agentPod, "sigil", 10*time.Minute), 0o600)
	appNS := kube.Namespace(t, "app")
	kube.ServiceAccount(t, appNS, "app")

	caAddr, health := e2e.FreeAddr(t), e2e.FreeAddr(t)
	adminSock := filepath.Join(dir, "ca", "admin.sock")
	e2e.WriteFile(t, filepath.Join(dir, "ca.yaml"), fmt.Sprintf(`trust_domain: %s
data_dir: %s
server_address: %s
node_attestation:
  k8s_psat:
    clusters:
      %s:
        kubeconfig: %s
        allowed_service_accounts: ["%s:sigil-agent"]
kubernetes:
  cluster: %s
  kubeconfig: %s
  lease_namespace: %s
`, td, filepath.Join(dir, "ca"), caAddr, cluster, kube.Kubeconfig, agentNS, cluster, kube.Kubeconfig, agentNS), 0o600)
	ca := sigil.Start(t, "ca", "run", "--config", filepath.Join(dir, "ca.yaml"))
	e2e.WaitForSocket(t, ca, adminSock, 60*time.Second)
	e2e.WriteFile(t, filepath.Join(dir, "bundle.pem"), sigil.MustRun(t, "bundle", "show", "--format", "pem", "--admin-socket", adminSock), 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	e2e.WriteFile(t, filepath.Join(dir, "agent.yaml"), fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: agent
socket_path: %s
trust_bundle_file: bundle.pem
health_address: %s
k8s_psat:
  cluster: %s
  token_path: token
workload_attestors:
  k8s:
    kubeconfig: %s
    node_name: %s
    proc_dir: %s
`, td, caAddr, filepath.Join(dir, "agent.sock"), health, cluster, kube.Kubeconfig, nodeNames[0], filepath.Join(dir, "proc")), 0o600)
	agent := sigil.Start(t, "agent", "run", "--config", filepath.Join(dir, "agent.yaml"))
	agent.WaitForOutput(t, "node attested", 60*time.Second)

	// The agent's own pod has the default identity: wait for its SVID,
	// then take the agent's resident set as the baseline.
	m := &svidMeter{url: "http://" + health + "/metrics"}
	base := m.waitAtLeast(t, 1, 60*time.Second)
	time.Sleep(5 * time.Second)
	rssBase := vmRSS(t, agent.Pid())
	t.Logf("agent attested as spiffe://%s/sigil/agent/k8s_psat/%s/%s; holds %d SVID(s), VmRSS %.1f MB", td, cluster, node0UID, base, mb(rssBase))

	// Create the pods; record when each of node 0's was asked for.
	share := (pods + nodes - 1) / nodes // pods i with i%nodes == 0
	stopMeter := m.record(20 * time.Millisecond)
	type created struct {
		at  time.Time
		uid string
	}
	all := make([]created, pods)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < pods; i = int(next.Add(1) - 1) {
				at := time.Now()
				uid, err := createPod(ctx, kube, appNS, i, nodeNames[i%nodes])
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				all[i] = created{at, uid}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("create pods: %v", firstErr)
	}
	took := time.Since(start)
	t.Logf("created %d pods over %d nodes (%d on the measured node) in %s (%.0f pods/s, %d in flight); load average %s",
		pods, nodes, share, took.Round(time.Millisecond), float64(pods)/took.Seconds(), inFlight, loadavg())

	m.waitAtLeast(t, base+share, 2*time.Minute+time.Duration(pods)*20*time.Millisecond)
	arrivals := stopMeter()
	time.Sleep(5 * time.Second)
	rss := vmRSS(t, agent.Pid())

	// Pod → entry: every pod's entry's created_at (the store's clock, the
	// same machine) minus when the pod's creation was asked for.
	entryAt := listEntryTimes(t, adminSock)
	var toEntry []time.Duration
	for i, c := range all {
		at, ok := entryAt[c.uid]
		if !ok {
			t.Fatalf("pod %d (uid %s) has no entry", i, c.uid)
		}
		toEntry = append(toEntry, at.Sub(c.at))
	}
	// Pod → SVID in the agent's cache: the agent's cached-SVID gauge,
	// sampled every 20 ms, gives the time of the k-th new SVID; it is paired
	// with the k-th of node 0's pods in creation order.
	var node0 []time.Time
	for i := 0; i < pods; i += nodes {
		node0 = append(node0, all[i].at)
	}
	slices.SortFunc(node0, func(a, b time.Time) int { return a.Compare(b) })
	var toSVID []time.Duration
	for k, at := range node0 {
		arr, ok := arrivalOf(arrivals, base+k+1)
		if !ok {
			t.Fatalf("SVID %d of node 0 never counted", k+1)
		}
		toSVID = append(toSVID, arr.Sub(at))
	}
	t.Logf("pod created → entry in the store (%d pods): %s", len(toEntry), percentiles(toEntry))
	t.Logf("pod created → SVID in the agent's cache (%d pods of node 0): %s", len(toSVID), percentiles(toSVID))
	t.Logf("agent VmRSS: %.1f MB holding %d SVIDs with %d pods on its node (%.1f MB before the pods); load average %s",
		mb(rss), base+share, share+1, mb(rssBase), loadavg())
}

// createPod creates pod number i on node and writes a running status with
// a container ID through the status subresource, as a kubelet would.
func createPod(ctx context.Context, kube *kubetest.Cluster, ns string, i int, node string) (string, error) {
	name := fmt.Sprintf("p-%05d", i)
	no := false
	p, err := kube.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: node, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "app", Image: "example.org/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create pod %s: %w", name, err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "app", Image: "example.org/app:1", ImageID: "example.org/app:1", Ready: true,
		ContainerID: fmt.Sprintf("containerd://%064x", i+1),
		State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
	}}
	if _, err := kube.Client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return "", fmt.Errorf("status of pod %s: %w", name, err)
	}
	return string(p.UID), nil
}

// applyCRD creates the SigilIdentity CRD from deploy/kubernetes, which the
// CA's reconciler watches.
func applyCRD(t *testing.T, kube *kubetest.Cluster) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "kubernetes", "base", "crd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create crd: %v", err)
	}
}

// listEntryTimes returns each pod-UID entry's creation time by pod UID.
func listEntryTimes(t *testing.T, adminSock string) map[string]time.Time {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := adminv1.NewAdminClient(conn)
	out := map[string]time.Time{}
	token := ""
	for {
		resp, err := admin.ListEntries(context.Background(), &adminv1.ListEntriesRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("list entries: %v", err)
		}
		for _, e := range resp.GetEntries() {
			for _, s := range e.GetSelectors() {
				if uid, ok := strings.CutPrefix(s, "k8s:pod-uid:"); ok {
					out[uid] = e.GetCreatedAt().AsTime()
				}
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out
		}
	}
}

// svidMeter reads the agent's sigil_agent_svids_cached gauge.
type svidMeter struct {
	url string
}

type sample struct {
	at time.Time
	n  int
}

func (m *svidMeter) read() (int, error) {
	resp, err := http.Get(m.url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "sigil_agent_svids_cached "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no sigil_agent_svids_cached in the agent's metrics")
}

func (m *svidMeter) waitAtLeast(t *testing.T, n int, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, err := m.read()
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent holds %d SVIDs (%v) after %s, want %d", got, err, d, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// record samples the gauge every interval until the returned function is
// called, which returns the samples where the count changed.
func (m *svidMeter) record(interval time.Duration) func() []sample {
	done := make(chan struct{})
	out := make(chan []sample, 1)
	go func() {
		var ss []sample
		last := -1
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			now := time.Now()
			if n, err := m.read(); err == nil && n != last {
				ss = append(ss, sample{now, n})
				last = n
			}
			select {
			case <-done:
				// The caller stops once it saw the count it waits for,
				// perhaps before this loop sampled it: one last read
				// records it (at most one interval late).
				if n, err := m.read(); err == nil && n != last {
					ss = append(ss, sample{time.Now(), n})
				}
				out <- ss
				return
			case <-tick.C:
			}
		}
	}()
	return func() []sample {
		close(done)
		return <-out
	}
}

// arrivalOf is the first sample time at which the count reached n.
func arrivalOf(ss []sample, n int) (time.Time, bool) {
	for _, s := range ss {
		if s.n >= n {
			return s.at, true
		}
	}
	return time.Time{}, false
}

func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		return ds[min(len(ds)-1, int(p*float64(len(ds))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", at(0.50), at(0.90), at(0.99), ds[len(ds)-1].Round(time.Millisecond))
}

func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(raw))[:3], " ")
}
