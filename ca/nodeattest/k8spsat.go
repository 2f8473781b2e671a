package nodeattest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// TypeK8sPSAT is the AttestParams.type of projected service account token
// attestation.
const TypeK8sPSAT = "k8s_psat"

// Bounds and defaults of k8s_psat.
const (
	// MaxPSATLen bounds a service account token from outside.
	MaxPSATLen = 16 << 10
	// DefaultPSATAudience is the audience the agent's token must be for.
	DefaultPSATAudience = "sigil"
	// psatCallTimeout bounds each call to an API server.
	psatCallTimeout = 10 * time.Second
)

// Keys of the TokenReview's user.extra for a token bound to a pod.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraNodeUID  = "authentication.kubernetes.io/node-uid"
	saUserPrefix  = "system:serviceaccount:"
)

// K8sCluster is one Kubernetes cluster whose agents may attest.
type K8sCluster struct {
	// Name is the cluster's name in agent IDs and selectors; agents send it.
	Name string
	// Client talks to the cluster's API server. It needs create on
	// tokenreviews and get on pods and nodes.
	Client kubernetes.Interface
	// ServiceAccounts are the agent service accounts allowed, as
	// "namespace:name". At least one.
	ServiceAccounts []string
	// Audience the token must be for; default DefaultPSATAudience.
	Audience string
}

// K8sPSATConfig configures the k8s_psat attestor.
type K8sPSATConfig struct {
	TrustDomain spiffeid.TrustDomain
	Clusters    []K8sCluster
}

// K8sPSAT attests agents that run in a pod of a known cluster by the pod's
// projected service account token (PSAT). The CA reviews the token with
// the cluster's API server (TokenReview, for the configured audience: a
// wrong audience, an expired token or one the cluster did not sign is
// refused), requires it to be bound to a pod of an allowed service
// account, then reads the pod (it must still exist with the token's UID:
// the API server caches a successful review for some seconds, so a deleted
// pod's token could still pass it) and the node it runs on (which must be
// the node named in the token, when the token names one).
//
// The agent ID is spiffe://TD/sigil/agent/k8s_psat/<cluster>/<node UID>.
// Node selectors, as SPIRE names them: k8s_psat:cluster:<name>,
// k8s_psat:agent_ns:, agent_sa:, agent_pod_name:, agent_pod_uid:,
// agent_pod_label:K:V, agent_node_name:, agent_node_uid:,
// agent_node_label:K:V. Tokens are not one-time: an agent may attest again
// as long as its token is valid.
type K8sPSAT struct {
	td       spiffeid.TrustDomain
	clusters map[string]psatCluster
}

type psatCluster struct {
	name     string
	client   kubernetes.Interface
	allowed  map[string]bool
	audience string
}

// NewK8sPSAT checks cfg and returns the attestor.
func NewK8sPSAT(cfg K8sPSATConfig) (*K8sPSAT, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8s_psat attestor: trust domain is required")
	}
	if len(cfg.Clusters) == 0 {
		return nil, errors.New("k8s_psat attestor: at least one cluster is required")
	}
	k := &K8sPSAT{td: cfg.TrustDomain, clusters: make(map[string]psatCluster, len(cfg.Clusters))}
	for _, c := range cfg.Clusters {
		if err := CheckClusterName(c.Name); err != nil {
			return nil, fmt.Errorf("k8s_psat attestor: cluster name: %w", err)
		}
		if _, dup := k.clusters[c.Name]; dup {
			return nil, fmt.Errorf("k8s_psat attestor: cluster %q is configured twice", c.Name)
		}
		if c.Client == nil {
			return nil, fmt.Errorf("k8s_psat attestor: cluster %q has no client", c.Name)
		}
		if len(c.ServiceAccounts) == 0 {
			return nil, fmt.Errorf("k8s_psat attestor: cluster %q allows no service account", c.Name)
		}
		pc := psatCluster{name: c.Name, client: c.Client, allowed: map[string]bool{}, audience: c.Audience}
		if pc.audience == "" {
			pc.audience = DefaultPSATAudience
		}
		for _, sa := range c.ServiceAccounts {
			if err := CheckServiceAccount(sa); err != nil {
				return nil, fmt.Errorf("k8s_psat attestor: cluster %q: %w", c.Name, err)
			}
			pc.allowed[sa] = true
		}
		k.clusters[c.Name] = pc
	}
	return k, nil
}

// CheckClusterName accepts a cluster name that is one valid SPIFFE ID path
// segment of at most 63 characters (it becomes part of the agent ID).
func CheckClusterName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 63 {
		return fmt.Errorf("%q is longer than 63 characters", name)
	}
	if _, err := sigilid.Agent(spiffeid.RequireTrustDomainFromString("x"), TypeK8sPSAT, name); err != nil || name == "." || name == ".." {
		return fmt.Errorf("%q: use letters, digits, '-', '_' and '.' only", name)
	}
	return nil
}

// CheckServiceAccount accepts "namespace:name" with both parts non-empty
// and free of ':' and spaces.
func CheckServiceAccount(sa string) error {
	ns, name, ok := strings.Cut(sa, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") || strings.ContainsAny(sa, " \t\n/") {
		return fmt.Errorf("service account %q: want namespace:name", sa)
	}
	return nil
}

// ClientFor returns a client for a cluster's API server from a kubeconfig
// file, or from the pod's in-cluster service account when kubeconfig is "".
func ClientFor(kubeconfig string) (kubernetes.Interface, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.Timeout = psatCallTimeout
	return kubernetes.NewForConfig(cfg)
}

// Type implements Attestor.
func (k *K8sPSAT) Type() string { return TypeK8sPSAT }

// Attest reviews the token and checks its pod and node.
func (k *K8sPSAT) Attest(ctx context.Context, p *nodev1.AttestParams, _ Challenge) (Result, error) {
	tok, name := p.GetToken(), p.GetCluster()
	switch {
	case name == "":
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster name is empty", ErrInvalid)
	case tok == "":
		return Result{}, fmt.Errorf("%w: k8s_psat: token is empty", ErrInvalid)
	case len(tok) > MaxPSATLen:
		return Result{}, fmt.Errorf("%w: k8s_psat: token longer than %d bytes", ErrInvalid, MaxPSATLen)
	case len(p.GetCertificates()) > 0:
		return Result{}, fmt.Errorf("%w: k8s_psat: certificates are not used by this method", ErrInvalid)
	}
	c, ok := k.clusters[name]
	if !ok {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %q is not configured on this CA", ErrRefused, truncate(name, 64))
	}
	callCtx, cancel := context.WithTimeout(ctx, psatCallTimeout)
	defer cancel()

	review, err := c.client.AuthenticationV1().TokenReviews().Create(callCtx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{c.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("k8s_psat: cluster %s: token review: %w", c.name, err)
	}
	st := review.Status
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s does not accept the token for audience %q (expired, for another audience, or not signed by this cluster): %s",
			ErrRefused, c.name, c.audience, truncate(reason, 200))
	}
	if !slices.Contains(st.Audiences, c.audience) {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: the token is not for audience %q", ErrRefused, c.name, c.audience)
	}
	ns, sa, ok := strings.Cut(strings.TrimPrefix(st.User.Username, saUserPrefix), ":")
	if !strings.HasPrefix(st.User.Username, saUserPrefix) || !ok {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: the token is not a service account token", ErrRefused, c.name)
	}
	if !c.allowed[ns+":"+sa] {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: service account %s:%s is not allowed to attest agents", ErrRefused, c.name, ns, sa)
	}
	podName, podUID := extra(st.User, extraPodName), extra(st.User, extraPodUID)
	if podName == "" || podUID == "" {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: the token is not bound to a pod (mount a projected service account token)", ErrRefused, c.name)
	}

	// The review may come from the API server's cache: read the pod.
	pod, err := c.client.CoreV1().Pods(ns).Get(callCtx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: the token's pod %s/%s no longer exists", ErrRefused, c.name, ns, podName)
	case err != nil:
		return Result{}, fmt.Errorf("k8s_psat: cluster %s: get pod %s/%s: %w", c.name, ns, podName, err)
	case string(pod.UID) != podUID:
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: the token's pod %s/%s was deleted (a pod of the same name has another UID)", ErrRefused, c.name, ns, podName)
	case pod.Spec.ServiceAccountName != sa:
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: pod %s/%s runs as service account %q, not %q", ErrRefused, c.name, ns, podName, pod.Spec.ServiceAccountName, sa)
	case pod.Spec.NodeName == "":
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: pod %s/%s is not scheduled on a node", ErrRefused, c.name, ns, podName)
	}
	if claimed := extra(st.User, extraNodeName); claimed != "" && claimed != pod.Spec.NodeName {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: the token names node %s but pod %s/%s is on node %s", ErrRefused, c.name, claimed, ns, podName, pod.Spec.NodeName)
	}
	node, err := c.client.CoreV1().Nodes().Get(callCtx, pod.Spec.NodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: node %s of pod %s/%s does not exist", ErrRefused, c.name, pod.Spec.NodeName, ns, podName)
	case err != nil:
		return Result{}, fmt.Errorf("k8s_psat: cluster %s: get node %s: %w", c.name, pod.Spec.NodeName, err)
	}
	if claimed := extra(st.User, extraNodeUID); claimed != "" && claimed != string(node.UID) {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: node %s was replaced since the token was issued (UID differs)", ErrRefused, c.name, node.Name)
	}
	id, err := sigilid.Agent(k.td, TypeK8sPSAT, c.name, string(node.UID))
	if err != nil {
		return Result{}, fmt.Errorf("%w: k8s_psat: cluster %s: node UID %q is not a valid ID segment", ErrRefused, c.name, truncate(string(node.UID), 64))
	}
	return Result{AgentID: id, Selectors: psatSelectors(c.name, ns, sa, pod, node)}, nil
}

func extra(u authenticationv1.UserInfo, key string) string {
	if v := u.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

func psatSelectors(cluster, ns, sa string, pod *corev1.Pod, node *corev1.Node) []selector.Selector {
	var out []selector.Selector
	add := func(key, value string) {
		s := selector.Selector{Type: TypeK8sPSAT, Value: key + ":" + value}
		if value != "" && s.Validate() == nil {
			out = append(out, s)
		}
	}
	add("cluster", cluster)
	add("agent_ns", ns)
	add("agent_sa", sa)
	add("agent_pod_name", pod.Name)
	add("agent_pod_uid", string(pod.UID))
	add("agent_node_name", node.Name)
	add("agent_node_uid", string(node.UID))
	add("agent_node_ip", pod.Status.HostIP)
	for _, kv := range sortedLabels(pod.Labels) {
		add("agent_pod_label", kv)
	}
	for _, kv := range sortedLabels(node.Labels) {
		add("agent_node_label", kv)
	}
	return selector.Normalize(out)
}

func sortedLabels(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+":"+v)
	}
	sort.Strings(out)
	return out
}

// truncate shortens text from outside for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
