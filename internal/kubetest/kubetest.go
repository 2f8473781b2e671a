package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// NotFound is the failure message when the control plane's binaries are missing.
const NotFound = "kube-apiserver or etcd not found: run hack/test.sh or bash hack/setup/60-kubernetes.sh " +
	"(installs Debian's etcd-server and builds kube-apiserver into ~/.cache/sigil/tools), " +
	"or set SIGIL_KUBE_APISERVER and SIGIL_ETCD"

// Issuer is the service-account token issuer of every test cluster.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Cluster is a running test control plane.
type Cluster struct {
	// URL is the API server's https address.
	URL string
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for the admin user (for kubectl and
	// for sigil processes started by a test).
	Kubeconfig string

	dir     string
	etcd    *exec.Cmd
	apiSrv  *exec.Cmd
	logs    *lockedBuffer
	stopped bool
}

// The one cluster of this test binary: tests of a package share it and Main
// stops it. Package state is unavoidable here, as in pgtest.
var shared struct {
	mu       sync.Mutex
	mainRuns bool
	c        *Cluster
	err      error
}

// Main runs the package's tests and then stops the cluster if a test
// started one. Call it from TestMain:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
// m may be another harness's wrapper around *testing.M (pgtest.Wrap).
func Main(m interface{ Run() int }) {
	shared.mu.Lock()
	shared.mainRuns = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	if shared.c != nil {
		shared.c.Stop()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// Start returns the binary's cluster, starting it on first use. The test
// fails if the binaries are missing or the cluster does not become ready.
func Start(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.mainRuns {
		t.Fatal("kubetest: call kubetest.Main(m) from TestMain so the cluster is stopped")
	}
	if shared.c == nil && shared.err == nil {
		dir, err := os.MkdirTemp("", "sigil-kubetest-")
		if err == nil {
			shared.c, err = StartCluster(dir, os.Stderr)
		}
		shared.err = err
	}
	if shared.err != nil {
		t.Fatalf("kubetest: %v", shared.err)
	}
	return shared.c
}

func binary(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	tools := os.Getenv("SIGIL_TOOLS")
	if tools == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", errors.New(NotFound)
		}
		tools = filepath.Join(cache, "sigil", "tools")
	}
	p := filepath.Join(tools, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %s", name, NotFound)
	}
	return p, nil
}

// StartCluster starts etcd and kube-apiserver with their state under dir
// (removed by Stop); their output goes to logs only when start-up fails.
func StartCluster(dir string, logs *os.File) (*Cluster, error) {
	etcdBin, err := binary("SIGIL_ETCD", "etcd")
	if err != nil {
		return nil, err
	}
	apiBin, err := binary("SIGIL_KUBE_APISERVER", "kube-apiserver")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, logs: &lockedBuffer{}}
	// Random free ports can be taken between picking and binding on a busy
	// machine: try a few times.
	for attempt := 0; ; attempt++ {
		err = c.start(etcdBin, apiBin)
		if err == nil {
			return c, nil
		}
		c.kill()
		if attempt == 4 || !strings.Contains(c.logs.String(), "address already in use") {
			fmt.Fprintf(logs, "kubetest: control plane output:\n%s\n", c.logs.String())
			os.RemoveAll(dir)
			return nil, err
		}
		c.logs.Reset()
	}
}

func (c *Cluster) start(etcdBin, apiBin string) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	etcdClient := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	etcdPeer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	etcdDir := filepath.Join(c.dir, "etcd")
	os.RemoveAll(etcdDir)
	c.etcd = exec.Command(etcdBin,
		"--name=kubetest", "--data-dir="+etcdDir,
		"--listen-client-urls="+etcdClient, "--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer, "--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=kubetest="+etcdPeer,
		"--listen-metrics-urls=http://127.0.0.1:"+strconv.Itoa(ports[2]),
		"--unsafe-no-fsync", "--log-level=warn")
	c.etcd.Stdout, c.etcd.Stderr = c.logs, c.logs
	c.etcd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.etcd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}

	saKey := filepath.Join(c.dir, "sa.key")
	if err := writeECKey(saKey); err != nil {
		return err
	}
	token := randomHex(16)
	tokens := filepath.Join(c.dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",kubetest-admin,kubetest-admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	certDir := filepath.Join(c.dir, "certs")
	os.RemoveAll(certDir)
	port := ports[3]
	c.apiSrv = exec.Command(apiBin,
		"--etcd-servers="+etcdClient,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port), "--cert-dir="+certDir,
		"--token-auth-file="+tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer="+Issuer,
		"--service-account-key-file="+saKey,
		"--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--v=0")
	c.apiSrv.Stdout, c.apiSrv.Stderr = c.logs, c.logs
	c.apiSrv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.apiSrv.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(port)

	// The serving certificate is self-signed and written at start; wait for it.
	certFile := filepath.Join(certDir, "apiserver.crt")
	deadline := time.Now().Add(90 * time.Second)
	var caPEM []byte
	for {
		if caPEM, err = os.ReadFile(certFile); err == nil && len(caPEM) > 0 {
			break
		}
		if err := c.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("kube-apiserver wrote no serving certificate in 90 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Config = &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             1000,
		Burst:           2000,
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	if err := c.waitReady(deadline); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	return writeKubeconfig(c.Kubeconfig, c.URL, certFile, token)
}

func (c *Cluster) exited() error {
	for _, p := range []*exec.Cmd{c.etcd, c.apiSrv} {
		if p != nil && p.ProcessState == nil {
			// Not waited for yet: check without blocking.
			var ws syscall.WaitStatus
			pid, _ := syscall.Wait4(p.Process.Pid, &ws, syscall.WNOHANG, nil)
			if pid == p.Process.Pid {
				return fmt.Errorf("%s exited at start (%v)", filepath.Base(p.Path), ws)
			}
		}
	}
	return nil
}

func (c *Cluster) waitReady(deadline time.Time) error {
	rc, err := rest.RESTClientFor(withNegotiated(c.Config))
	if err != nil {
		return err
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var code int
		res := rc.Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
		cancel()
		if res.Error() == nil && code == http.StatusOK {
			return nil
		}
		if err := c.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready in 90 s (last: %v)", res.Error())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func withNegotiated(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = kubernetesScheme()
	return c
}

// Stop stops the API server and etcd and removes their state.
func (c *Cluster) Stop() {
	if c.stopped {
		return
	}
	c.stopped = true
	c.kill()
	os.RemoveAll(c.dir)
}

func (c *Cluster) kill() {
	for _, p := range []*exec.Cmd{c.apiSrv, c.etcd} {
		if p != nil && p.Process != nil {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
	c.apiSrv, c.etcd = nil, nil
}

// Namespace creates a namespace with a unique name starting with prefix and
// deletes it when the test ends.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	ctx := context.Background()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// ServiceAccount creates a service account (no controller makes them here).
func (c *Cluster) ServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: create service account %s/%s: %v", ns, name, err)
	}
}

// Node creates a node object with the given labels and returns its UID.
func (c *Cluster) Node(t testing.TB, name string, labels map[string]string) types.UID {
	t.Helper()
	n, err := c.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create node %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return n.UID
}

// Pod creates a pod running as service account sa on node (spec.nodeName
// set, as if scheduled) with one container named "app"; the service
// account must exist.
func (c *Cluster) Pod(t testing.TB, ns, name, sa, node string, labels map[string]string) *corev1.Pod {
	t.Helper()
	no := false
	p, err := c.Client.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName:           sa,
			NodeName:                     node,
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "app", Image: "example.org/app:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create pod %s/%s: %v", ns, name, err)
	}
	return p
}

// SetContainerID writes a running status for the pod's containers through
// the status subresource, as a kubelet would: container name → container ID
// (for example "containerd://<64 hex>").
func (c *Cluster) SetContainerID(t testing.TB, ns, name string, ids map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kubetest: get pod %s/%s: %v", ns, name, err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = nil
	for _, ctr := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: ctr.Name, Image: ctr.Image, ImageID: ctr.Image, ContainerID: ids[ctr.Name], Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		})
	}
	p, err = c.Client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("kubetest: update status of pod %s/%s: %v", ns, name, err)
	}
	return p
}

// PodToken returns a service-account token of the pod's service account,
// bound to the pod, for audience, valid for ttl (the API server's minimum
// is 10 minutes).
func (c *Cluster) PodToken(t testing.TB, pod *corev1.Pod, audience string, ttl time.Duration) string {
	t.Helper()
	secs := int64(ttl / time.Second)
	tr, err := c.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(context.Background(), pod.Spec.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return tr.Status.Token
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeECKey(path string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeKubeconfig(path, server, caFile, token string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: kubetest
  context: {cluster: kubetest, user: admin}
current-context: kubetest
`, server, caFile, token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the last 1 MiB only: the output is shown when start-up fails.
	if l.b.Len() > 1<<20 {
		rest := l.b.Bytes()[l.b.Len()-(512<<10):]
		l.b = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
