// Package k8s is the end-to-end suite for Sigil on Kubernetes: real `sigil
// ca run` and `sigil agent run` processes attesting by k8s_psat against a
// real kube-apiserver and etcd; see README.md.
package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sigilhq/sigil/internal/e2e"
	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/internal/kubetest"
)

const (
	td      = "e2e.test"
	cluster = "e2e"
)

var (
	sigil *e2e.Binary
	kube  *kubetest.Cluster
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run builds sigil and starts the control plane once for the suite, and
// stops and removes both after the tests, whatever they did.
func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sigil-e2e-k8s-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if sigil, err = e2e.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	kubeDir := filepath.Join(dir, "kube")
	if err := os.Mkdir(kubeDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	if kube, err = kubetest.StartCluster(kubeDir, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: kubetest:", err)
		return 1
	}
	defer kube.Stop()
	return m.Run()
}

// env is one CA and one agent attesting by k8s_psat as the pod
// sigil-agent-0 of service account sigil-agent on node node-1.
type env struct {
	dir, caConfig, agentConfig string
	adminSock, agentSock       string
	tokenFile                  string
	caAddr, healthAddr         string
	ns, node                   string
	nodeUID                    string
	ca, agent                  *e2e.Proc
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		dir:         dir,
		caConfig:    filepath.Join(dir, "ca.yaml"),
		agentConfig: filepath.Join(dir, "agent.yaml"),
		adminSock:   filepath.Join(dir, "ca", "admin.sock"),
		agentSock:   filepath.Join(dir, "agent", "agent.sock"),
		tokenFile:   filepath.Join(dir, "token"),
		caAddr:      e2e.FreeAddr(t),
		healthAddr:  e2e.FreeAddr(t),
		ns:          kube.Namespace(t, "sigil"),
		node:        "node-1",
	}
	kube.ServiceAccount(t, e.ns, "sigil-agent")
	e.nodeUID = string(kube.Node(t, e.node, map[string]string{"pool": "blue"}))
	e2e.WriteFile(t, e.caConfig, fmt.Sprintf(`trust_domain: %s
data_dir: %s
server_address: %s
node_attestation:
  k8s_psat:
    clusters:
      %s:
        kubeconfig: %s
        allowed_service_accounts: ["%s:sigil-agent"]
`, td, filepath.Join(dir, "ca"), e.caAddr, cluster, kube.Kubeconfig, e.ns), 0o600)
	return e
}

// cgroup writes the cgroup file the agent's k8s attestor reads for this
// process.
func (e *env) cgroup(t *testing.T, data string) {
	t.Helper()
	dir := filepath.Join(e.dir, "proc", strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e2e.WriteFile(t, filepath.Join(dir, "cgroup"), data, 0o644)
}

func (e *env) admin(args ...string) []string { return append(args, "--admin-socket", e.adminSock) }

// agentRecord is what `sigil agent list -o json` prints of one agent.
type agentRecord struct {
	ID              string   `json:"id"`
	AttestationType string   `json:"attestation_type"`
	Serial          string   `json:"serial"`
	Selectors       []string `json:"selectors"`
}

func (e *env) agents(t *testing.T) []agentRecord {
	t.Helper()
	var resp struct {
		Agents []agentRecord `json:"agents"`
	}
	out := sigil.MustRun(t, e.admin("agent", "list", "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("agent list -o json printed %q: %v", out, err)
	}
	return resp.Agents
}

// fetchIDs fetches this process's X509-SVIDs until ok accepts their IDs
// (the agent may still be minting) and returns them.
func (e *env) fetchIDs(t *testing.T, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+e.agentSock))
		cancel()
		var ids []string
		if err == nil {
			for _, s := range x.SVIDs {
				ids = append(ids, s.ID.String())
			}
			if ok(ids) {
				return ids
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch X509-SVIDs: got %q, %v\nagent output:\n%s", ids, err, e.agent.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// x509Watcher records what a go-spiffe X.509 watch sees.
type x509Watcher struct {
	updates chan *workloadapi.X509Context
	errs    chan error
}

func (w *x509Watcher) OnX509ContextUpdate(x *workloadapi.X509Context) {
	select {
	case w.updates <- x:
	default:
	}
}

func (w *x509Watcher) OnX509ContextWatchError(err error) {
	if status.Code(err) == codes.Canceled {
		return
	}
	select {
	case w.errs <- err:
	default:
	}
}

// metric reads one sample (name with its labels, as /metrics prints it)
// from the agent's metrics endpoint.
func (e *env) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.healthAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("the agent's /metrics has no %s:\n%s", sample, body)
	return 0
}

// TestPSAT: see README.md, steps 1–5.
func TestPSAT(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// 1. The agent's pod and its projected token; the CA; agent.yaml.
	pod := kube.Pod(t, e.ns, "sigil-agent-0", "sigil-agent", e.node, map[string]string{"app": "sigil-agent"})
	e2e.WriteFile(t, e.tokenFile, kube.PodToken(t, pod, "sigil", 10*time.Minute), 0o600)
	e.ca = sigil.Start(t, "ca", "run", "--config", e.caConfig)
	e2e.WaitForSocket(t, e.ca, e.adminSock, 30*time.Second)
	e2e.WriteFile(t, filepath.Join(e.dir, "bundle.pem"), sigil.MustRun(t, e.admin("bundle", "show", "--format", "pem")...), 0o644)
	e2e.WriteFile(t, e.agentConfig, fmt.Sprintf(`trust_domain: %s
server_address: %s
data_dir: agent
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
    wait: 3s
`, td, e.caAddr, e.healthAddr, cluster, kube.Kubeconfig, e.node, filepath.Join(e.dir, "proc")), 0o600)
	// The workload is this test process: the k8s attestor reads its cgroup
	// from the injected proc dir. A host cgroup first (not in a pod).
	e.cgroup(t, "0::/user.slice/user-0.slice/session-1.scope\n")

	// 2. The agent attests; the CA records its ID and node selectors.
	e.agent = sigil.Start(t, "agent", "run", "--config", e.agentConfig)
	e2e.WaitForSocket(t, e.agent, e.agentSock, 30*time.Second)
	e.agent.WaitForOutput(t, "node attested", 30*time.Second)
	agentID := "spiffe://" + td + "/sigil/agent/k8s_psat/" + cluster + "/" + e.nodeUID
	list := e.agents(t)
	if len(list) != 1 || list[0].ID != agentID || list[0].AttestationType != "k8s_psat" {
		t.Fatalf("agents %+v, want one k8s_psat agent %s", list, agentID)
	}
	for _, want := range []string{
		"k8s_psat:cluster:" + cluster,
		"k8s_psat:agent_ns:" + e.ns,
		"k8s_psat:agent_sa:sigil-agent",
		"k8s_psat:agent_pod_name:sigil-agent-0",
		"k8s_psat:agent_pod_uid:" + string(pod.UID),
		"k8s_psat:agent_pod_label:app:sigil-agent",
		"k8s_psat:agent_node_name:" + e.node,
		"k8s_psat:agent_node_uid:" + e.nodeUID,
		"k8s_psat:agent_node_label:pool:blue",
	} {
		if !slices.Contains(list[0].Selectors, want) {
			t.Errorf("agent selectors %q lack %s", list[0].Selectors, want)
		}
	}

	// 3. A workload of this agent (this process, uid 0) gets its SVID.
	const wid = "spiffe://" + td + "/w/root"
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", wid, "--parent-id", agentID, "--selector", "unix:uid:0")...)
	if ids := e.fetchIDs(t, func(ids []string) bool { return len(ids) > 0 }); !slices.Equal(ids, []string{wid}) {
		t.Fatalf("workload SVIDs %q, want %s", ids, wid)
	}

	// 4. A pod on the agent's node: this process is placed in the cgroup of
	// its container and gets the pod's SVID over the Workload API (go-spiffe).
	kube.ServiceAccount(t, e.ns, "app")
	app := kube.Pod(t, e.ns, "app-0", "app", e.node, map[string]string{"app": "shop"})
	ctrID := strings.Repeat("5e", 32)
	kube.SetContainerID(t, e.ns, app.Name, map[string]string{"app": "containerd://" + ctrID})
	podID := "spiffe://" + td + "/ns/" + e.ns + "/sa/app"
	sigil.MustRun(t, e.admin("entry", "create", "--spiffe-id", podID, "--parent-id", agentID,
		"--selector", "k8s:ns:"+e.ns, "--selector", "k8s:sa:app", "--selector", "k8s:pod-label:app:shop")...)
	e.cgroup(t, "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+
		strings.ReplaceAll(string(app.UID), "-", "_")+".slice/cri-containerd-"+ctrID+".scope\n")
	ids := e.fetchIDs(t, func(ids []string) bool { return slices.Contains(ids, podID) })
	if !slices.Contains(ids, wid) {
		t.Fatalf("SVIDs %q: want the pod's %s and the uid's %s", ids, podID, wid)
	}
	// Streams open on the container: a go-spiffe watch and an Envoy SDS
	// stream, each holding the pod's SVID.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	w := &x509Watcher{updates: make(chan *workloadapi.X509Context, 64), errs: make(chan error, 64)}
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- workloadapi.WatchX509Context(wctx, w, workloadapi.WithAddr("unix://"+e.agentSock))
	}()
	defer func() {
		stopWatch()
		<-watchDone
	}()
	select {
	case x := <-w.updates:
		if !slices.ContainsFunc(x.SVIDs, func(s *x509svid.SVID) bool { return s.ID.String() == podID }) {
			t.Fatalf("the open watch got %d SVIDs without the pod's %s", len(x.SVIDs), podID)
		}
	case err := <-w.errs:
		t.Fatalf("open watch: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the open watch got nothing in 30 s")
	}
	envoy, err := envoytest.Dial(e.agentSock, envoytest.Node("sidecar~10.0.0.9~app-0~"+e.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	sdsCtx, stopSDS := context.WithTimeout(ctx, 2*time.Minute)
	defer stopSDS()
	sds, err := envoy.StreamSecrets(sdsCtx, podID)
	if err != nil {
		t.Fatal(err)
	}
	defer sds.Close()
	if _, err := sds.Next(sdsCtx); err != nil || sds.Secret(podID) == nil {
		t.Fatalf("sds stream of the pod's container: %v, secret %v", err, sds.Secret(podID))
	}

	// The pod is deleted: the open streams end with PermissionDenied (the
	// pod's SVID leaves them; go-spiffe keeps retrying, refused), and a new
	// call from its container is refused at once.
	zero := int64(0)
	deleted := time.Now()
	if err := kube.Client.CoreV1().Pods(e.ns).Delete(ctx, app.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.errs:
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("open watch after the deletion: %v, want PermissionDenied", err)
		}
		t.Logf("open go-spiffe watch: %v, %s after the delete call", err, time.Since(deleted).Round(time.Millisecond))
	case x := <-w.updates:
		t.Fatalf("open watch after the deletion: an update with %d SVIDs, want PermissionDenied", len(x.SVIDs))
	case <-time.After(30 * time.Second):
		t.Fatalf("the open watch still holds the deleted pod's SVID 30 s after the deletion\nagent output:\n%s", e.agent.Output())
	}
	if _, err := sds.Next(sdsCtx); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sds stream after the deletion: %v, want PermissionDenied", err)
	}
	t.Logf("open sds stream: ended %s after the delete call", time.Since(deleted).Round(time.Millisecond))
	if v := e.metric(t, `sigil_k8s_attestor_stream_wakes_total{change="deleted"}`); v < 1 {
		t.Fatalf("sigil_k8s_attestor_stream_wakes_total{change=\"deleted\"} = %v, want at least 1", v)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := workloadapi.FetchX509Context(fctx, workloadapi.WithAddr("unix://"+e.agentSock))
		cancel()
		if err != nil {
			t.Logf("after the pod was deleted: %v", err)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "was deleted") {
				t.Fatalf("a new call from the deleted pod's container: %v, want PermissionDenied saying the pod was deleted", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted pod's container still gets SVIDs 15 s after the deletion")
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.cgroup(t, "0::/user.slice/user-0.slice/session-1.scope\n")

	// 5a. PSAT agents attest again: with a rotated token file, an evicted
	// agent attests anew (same agent ID, new serial).
	e2e.WriteFile(t, e.tokenFile, kube.PodToken(t, pod, "sigil", 10*time.Minute), 0o600)
	before := list[0].Serial
	sigil.MustRun(t, e.admin("agent", "evict", agentID)...)
	deadline = time.Now().Add(30 * time.Second)
	for {
		list = e.agents(t)
		if len(list) == 1 && list[0].ID == agentID && list[0].Serial != "" && list[0].Serial != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the evicted agent did not attest again in 30 s: %+v\nagent output:\n%s", list, e.agent.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// 5b. The agent's pod is deleted: its token is refused at the next
	// attestation, at once (not after the API server's review cache).
	if err := kube.Client.CoreV1().Pods(e.ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	sigil.MustRun(t, e.admin("agent", "evict", agentID)...)
	// Within the API server's review cache (~10 s) the CA's own pod check
	// refuses; after it, the TokenReview itself does.
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(e.ca.Output(), "pod "+e.ns+"/sigil-agent-0 no longer exists") &&
		!strings.Contains(e.ca.Output(), "does not accept the token") {
		if time.Now().After(deadline) {
			t.Fatalf("the CA did not refuse the deleted pod's token in 30 s:\n%s", e.ca.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if list := e.agents(t); len(list) != 0 {
		t.Fatalf("agents after the pod was deleted: %+v", list)
	}
}
