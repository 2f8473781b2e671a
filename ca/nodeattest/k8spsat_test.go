package nodeattest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	agentattest "github.com/sigilhq/sigil/agent/nodeattest"
	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/internal/kubetest"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// psatEnv is one namespace of the test cluster with an allowed agent
// service account, a node and an attestor for cluster "test".
type psatEnv struct {
	c    *kubetest.Cluster
	ns   string
	att  *nodeattest.K8sPSAT
	node string
}

func newPSATEnv(t *testing.T) *psatEnv {
	t.Helper()
	c := kubetest.Start(t)
	e := &psatEnv{c: c, ns: c.Namespace(t, "psat")}
	c.ServiceAccount(t, e.ns, "sigil-agent")
	c.ServiceAccount(t, e.ns, "intruder")
	e.node = "node-" + e.ns
	c.Node(t, e.node, map[string]string{"topology.kubernetes.io/zone": "z1", "pool": "blue"})
	att, err := nodeattest.NewK8sPSAT(nodeattest.K8sPSATConfig{
		TrustDomain: td,
		Clusters: []nodeattest.K8sCluster{{
			Name: "test", Client: c.Client, ServiceAccounts: []string{e.ns + ":sigil-agent", "other:sigil-agent"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.att = att
	return e
}

func (e *psatEnv) params(tok string) *nodev1.AttestParams {
	return &nodev1.AttestParams{Type: "k8s_psat", Token: tok, Cluster: "test"}
}

// TestK8sPSATAccepts attests an agent pod twice (tokens are not one-time)
// through the agent-side attestor reading a token file, and checks the
// agent ID and every selector.
func TestK8sPSATAccepts(t *testing.T) {
	e := newPSATEnv(t)
	ctx := context.Background()
	pod := e.c.Pod(t, e.ns, "sigil-agent-x1", "sigil-agent", e.node, map[string]string{"app": "sigil-agent"})
	node, err := e.c.Client.CoreV1().Nodes().Get(ctx, e.node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "sigil-agent")
	agent := agentattest.K8sPSAT{Cluster: "test", TokenPath: tokFile}
	wantID := "spiffe://example.org/sigil/agent/k8s_psat/test/" + string(node.UID)
	for i := range 2 {
		// A new token each time, as the kubelet rotates it.
		if err := os.WriteFile(tokFile, []byte(e.c.PodToken(t, pod, "sigil", 10*time.Minute)), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := agent.LoadParams()
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.att.Attest(ctx, p, nil)
		if err != nil {
			t.Fatalf("attestation %d: %v", i+1, err)
		}
		if res.AgentID.String() != wantID {
			t.Fatalf("agent id %s, want %s", res.AgentID, wantID)
		}
		got := selector.Strings(res.Selectors)
		want := []string{
			"k8s_psat:agent_node_label:pool:blue",
			"k8s_psat:agent_node_label:topology.kubernetes.io/zone:z1",
			"k8s_psat:agent_node_name:" + e.node,
			"k8s_psat:agent_node_uid:" + string(node.UID),
			"k8s_psat:agent_ns:" + e.ns,
			"k8s_psat:agent_pod_name:sigil-agent-x1",
			"k8s_psat:agent_pod_uid:" + string(pod.UID),
			"k8s_psat:agent_sa:sigil-agent",
			"k8s_psat:cluster:test",
		}
		// The pod's labels as stored: besides app, the API server copies
		// the node's topology labels onto a pod created with a nodeName.
		for k, v := range pod.Labels {
			want = append(want, "k8s_psat:agent_pod_label:"+k+":"+v)
		}
		slices.Sort(want)
		if !slices.Contains(want, "k8s_psat:agent_pod_label:app:sigil-agent") || !slices.Equal(got, want) {
			t.Fatalf("selectors\n got %q\nwant %q", got, want)
		}
	}
}

// TestK8sPSATRefuses checks each bad token or state against the real API
// server and the reason the agent is given.
func TestK8sPSATRefuses(t *testing.T) {
	e := newPSATEnv(t)
	ctx := context.Background()
	pod := e.c.Pod(t, e.ns, "agent", "sigil-agent", e.node, nil)
	good := e.c.PodToken(t, pod, "sigil", 10*time.Minute)
	intruder := e.c.Pod(t, e.ns, "intruder", "intruder", e.node, nil)

	tests := []struct {
		name   string
		params *nodev1.AttestParams
		want   error
		msg    string
	}{
		{name: "wrong audience", params: e.params(e.c.PodToken(t, pod, "not-sigil", 10*time.Minute)), want: nodeattest.ErrRefused, msg: `does not accept the token for audience "sigil"`},
		// The API server's signing key signs a token that expired an hour ago.
		{name: "expired token", params: e.params(resign(t, good, clusterKey(t, e.c), -time.Hour)), want: nodeattest.ErrRefused, msg: "does not accept the token"},
		// A token of another cluster: one kube-apiserver per test binary is
		// what is affordable, and what tells another cluster's token apart
		// is only its signing key, so the same claims signed by a key this
		// API server does not know stand in for it.
		{name: "token of another cluster", params: e.params(resign(t, good, newECKey(t), 0)), want: nodeattest.ErrRefused, msg: "not signed by this cluster"},
		{name: "service account not allowed", params: e.params(e.c.PodToken(t, intruder, "sigil", 10*time.Minute)), want: nodeattest.ErrRefused, msg: "service account " + e.ns + ":intruder is not allowed"},
		{name: "token not bound to a pod", params: e.params(unboundToken(t, e.c, e.ns, "sigil-agent")), want: nodeattest.ErrRefused, msg: "not bound to a pod"},
		{name: "garbage token", params: e.params("not.a.jwt"), want: nodeattest.ErrRefused, msg: "does not accept the token"},
		{name: "cluster not configured", params: &nodev1.AttestParams{Type: "k8s_psat", Token: good, Cluster: "prod"}, want: nodeattest.ErrRefused, msg: `cluster "prod" is not configured`},
		{name: "no cluster", params: &nodev1.AttestParams{Type: "k8s_psat", Token: good}, want: nodeattest.ErrInvalid, msg: "cluster name is empty"},
		{name: "no token", params: e.params(""), want: nodeattest.ErrInvalid, msg: "token is empty"},
		{name: "oversized token", params: e.params(strings.Repeat("a", nodeattest.MaxPSATLen+1)), want: nodeattest.ErrInvalid, msg: "longer than"},
		{name: "certificates given", params: &nodev1.AttestParams{Type: "k8s_psat", Token: good, Cluster: "test", Certificates: [][]byte{{1}}}, want: nodeattest.ErrInvalid, msg: "certificates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.att.Attest(ctx, tt.params, nil)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
			if tok := tt.params.GetToken(); len(tok) > 20 && strings.Contains(err.Error(), tok) {
				t.Fatal("the error carries the token")
			}
		})
	}
	// The good token still works after all that.
	if _, err := e.att.Attest(ctx, e.params(good), nil); err != nil {
		t.Fatalf("good token: %v", err)
	}
}

// TestK8sPSATDeletedPod deletes the agent's pod and attests at once: the
// API server may still accept the token from its review cache (~10 s), so
// the refusal must come from reading the pod. A pod re-created under the
// same name does not revive the old token.
func TestK8sPSATDeletedPod(t *testing.T) {
	e := newPSATEnv(t)
	ctx := context.Background()
	pods := e.c.Client.CoreV1().Pods(e.ns)
	pod := e.c.Pod(t, e.ns, "agent", "sigil-agent", e.node, nil)
	tok := e.c.PodToken(t, pod, "sigil", 10*time.Minute)
	if _, err := e.att.Attest(ctx, e.params(tok), nil); err != nil {
		t.Fatalf("before deletion: %v", err)
	}
	zero := int64(0)
	if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	_, err := e.att.Attest(ctx, e.params(tok), nil)
	if !errors.Is(err, nodeattest.ErrRefused) || !strings.Contains(err.Error(), "pod "+e.ns+"/agent no longer exists") && !strings.Contains(err.Error(), "does not accept the token") {
		t.Fatalf("deleted pod: err = %v", err)
	}
	t.Logf("deleted pod refused: %v", err)

	e.c.Pod(t, e.ns, "agent", "sigil-agent", e.node, nil)
	_, err = e.att.Attest(ctx, e.params(tok), nil)
	if !errors.Is(err, nodeattest.ErrRefused) || !strings.Contains(err.Error(), "another UID") && !strings.Contains(err.Error(), "does not accept the token") {
		t.Fatalf("re-created pod: err = %v", err)
	}
	t.Logf("re-created pod refused: %v", err)
}

// TestK8sPSATNodeGone refuses a pod whose node object was deleted.
func TestK8sPSATNodeGone(t *testing.T) {
	e := newPSATEnv(t)
	ctx := context.Background()
	pod := e.c.Pod(t, e.ns, "agent", "sigil-agent", e.node, nil)
	tok := e.c.PodToken(t, pod, "sigil", 10*time.Minute)
	if err := e.c.Client.CoreV1().Nodes().Delete(ctx, e.node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := e.att.Attest(ctx, e.params(tok), nil)
	if !errors.Is(err, nodeattest.ErrRefused) || !strings.Contains(err.Error(), "node "+e.node+" of pod "+e.ns+"/agent does not exist") {
		t.Fatalf("err = %v", err)
	}
	// The same name again is another node (another UID).
	e.c.Node(t, e.node, nil)
	_, err = e.att.Attest(ctx, e.params(tok), nil)
	if !errors.Is(err, nodeattest.ErrRefused) || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("replaced node: err = %v", err)
	}
}

// TestK8sPSATAPIServerDown is the CA's failure, not the agent's: the error
// wraps neither ErrRefused nor ErrInvalid, so the agent is told to retry.
func TestK8sPSATAPIServerDown(t *testing.T) {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	att, err := nodeattest.NewK8sPSAT(nodeattest.K8sPSATConfig{TrustDomain: td, Clusters: []nodeattest.K8sCluster{{Name: "test", Client: client, ServiceAccounts: []string{"a:b"}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = att.Attest(context.Background(), &nodev1.AttestParams{Type: "k8s_psat", Token: "x.y.z", Cluster: "test"}, nil)
	if err == nil || errors.Is(err, nodeattest.ErrRefused) || errors.Is(err, nodeattest.ErrInvalid) || !strings.Contains(err.Error(), "token review") {
		t.Fatalf("err = %v, want a token review failure of the CA", err)
	}
}

func TestNewK8sPSATChecksConfig(t *testing.T) {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ok := nodeattest.K8sCluster{Name: "c", Client: client, ServiceAccounts: []string{"ns:sa"}}
	with := func(f func(*nodeattest.K8sCluster)) nodeattest.K8sCluster { c := ok; f(&c); return c }
	tests := []struct {
		name     string
		clusters []nodeattest.K8sCluster
		want     string
	}{
		{name: "no clusters", want: "at least one cluster"},
		{name: "twice", clusters: []nodeattest.K8sCluster{ok, ok}, want: "configured twice"},
		{name: "no client", clusters: []nodeattest.K8sCluster{with(func(c *nodeattest.K8sCluster) { c.Client = nil })}, want: "no client"},
		{name: "no service account", clusters: []nodeattest.K8sCluster{with(func(c *nodeattest.K8sCluster) { c.ServiceAccounts = nil })}, want: "allows no service account"},
		{name: "bad service account", clusters: []nodeattest.K8sCluster{with(func(c *nodeattest.K8sCluster) { c.ServiceAccounts = []string{"ns/sa"} })}, want: "want namespace:name"},
		{name: "bad name", clusters: []nodeattest.K8sCluster{with(func(c *nodeattest.K8sCluster) { c.Name = "a b" })}, want: "cluster name"},
		{name: "long name", clusters: []nodeattest.K8sCluster{with(func(c *nodeattest.K8sCluster) { c.Name = strings.Repeat("a", 64) })}, want: "longer than 63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := nodeattest.NewK8sPSAT(nodeattest.K8sPSATConfig{TrustDomain: td, Clusters: tt.clusters})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := nodeattest.NewK8sPSAT(nodeattest.K8sPSATConfig{TrustDomain: td, Clusters: []nodeattest.K8sCluster{ok}}); err != nil {
		t.Fatal(err)
	}
}

// unboundToken is a service account token for audience sigil bound to no
// object.
func unboundToken(t *testing.T, c *kubetest.Cluster, ns, sa string) string {
	t.Helper()
	secs := int64(600)
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"sigil"}, ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// clusterKey is the test API server's service account signing key, which
// kubetest keeps beside the kubeconfig it writes.
func clusterKey(t *testing.T, c *kubetest.Cluster) *ecdsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(filepath.Dir(c.Kubeconfig), "sa.key"))
	if err != nil {
		t.Fatalf("the test cluster's signing key (kubetest writes sa.key beside the kubeconfig): %v", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("sa.key: no PEM block")
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// resign returns tok's header and claims signed (ES256) by key; a non-zero
// shift moves iat, nbf and exp by it (negative: into the past).
func resign(t *testing.T, tok string, key *ecdsa.PrivateKey, shift time.Duration) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if shift != 0 {
		exp := claims["exp"].(float64)
		iat := claims["iat"].(float64)
		life := exp - iat
		now := float64(time.Now().Add(shift).Unix())
		claims["exp"], claims["iat"], claims["nbf"] = now, now-life, now-life
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
