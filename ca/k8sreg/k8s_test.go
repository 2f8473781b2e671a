package k8sreg_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/sigilhq/sigil/ca/k8sreg"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/internal/kubetest"
	"github.com/sigilhq/sigil/internal/pgtest"
	"github.com/sigilhq/sigil/internal/selector"
)

func TestMain(m *testing.M) { kubetest.Main(pgtest.Wrap(m)) }

var td = spiffeid.RequireTrustDomainFromString("example.org")

var crdOnce sync.Once

// applyCRD creates the SigilIdentity CRD from deploy/kubernetes and waits
// until it is served.
func applyCRD(t testing.TB, c *kubetest.Cluster) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	crdOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "deploy", "kubernetes", "base", "crd.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
		if _, err := crds.Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create crd: %v", err)
		}
	})
	waitFor(t, 30*time.Second, "sigilidentities served", func() bool {
		_, err := dyn.Resource(k8sreg.GVR).List(context.Background(), metav1.ListOptions{Limit: 1})
		return err == nil
	})
	return dyn
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func openStore(t testing.TB) store.Store {
	t.Helper()
	return openBackend(t, "sqlite")
}

// openBackend opens an empty store: "sqlite" (a file) or "postgres" (a
// fresh database on pgtest's server).
func openBackend(t testing.TB, backend string) store.Store {
	t.Helper()
	var (
		st  *sqlstore.Store
		err error
	)
	switch backend {
	case "sqlite":
		st, err = sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sigil.db"))
	case "postgres":
		st, err = sqlstore.OpenPostgres(context.Background(), pgtest.Start(t))
	default:
		t.Fatalf("store backend %q: want sqlite or postgres", backend)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newReconciler(t testing.TB, c *kubetest.Cluster, dyn dynamic.Interface, st k8sreg.Entries, observe func(k8sreg.Result)) *k8sreg.Reconciler {
	t.Helper()
	r, err := k8sreg.New(k8sreg.Config{
		TrustDomain: td, Cluster: "test", Client: c.Client, Dynamic: dyn, Store: st,
		Batch: 20 * time.Millisecond, BatchSize: 1000, Observe: observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs fn until the test ends.
func run(t testing.TB, fn func(ctx context.Context) error) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func entriesIn(t testing.TB, st k8sreg.Entries, ns string) []store.Entry {
	t.Helper()
	all, err := st.ListEntries(context.Background(), store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(e store.Entry) bool {
		return !slices.Contains(e.Selectors, selector.Selector{Type: "k8s", Value: "ns:" + ns})
	})
}

func ids(es []store.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.SPIFFEID)
	}
	slices.Sort(out)
	return out
}

func waitEntries(t testing.TB, st k8sreg.Entries, ns string, want ...string) []store.Entry {
	t.Helper()
	slices.Sort(want)
	var got []store.Entry
	deadline := time.Now().Add(15 * time.Second)
	for {
		got = entriesIn(t, st, ns)
		if slices.Equal(ids(got), want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("entries in %s: %v, want %v", ns, ids(got), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func deletePod(t testing.TB, c *kubetest.Cluster, ns, name string) {
	t.Helper()
	zero := int64(0)
	if err := c.Client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
}

func identity(name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "sigil.dev/v1alpha1", "kind": "SigilIdentity",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
}

func createIdentity(t testing.TB, dyn dynamic.Interface, u *unstructured.Unstructured) {
	t.Helper()
	if _, err := dyn.Resource(k8sreg.GVR).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create sigilidentity %s: %v", u.GetName(), err)
	}
	t.Cleanup(func() {
		_ = dyn.Resource(k8sreg.GVR).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
	})
}

func status(t testing.TB, dyn dynamic.Interface, name string) k8sreg.IdentityStatus {
	t.Helper()
	u, err := dyn.Resource(k8sreg.GVR).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	si, err := k8sreg.FromUnstructured(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	return si.Status
}

func TestReconcile(t *testing.T) {
	c := kubetest.Start(t)
	dyn := applyCRD(t, c)
	st := openStore(t)
	ctx := context.Background()
	ns := c.Namespace(t, "shop")
	c.ServiceAccount(t, ns, "cart")
	c.ServiceAccount(t, ns, "web")
	node := "node-" + ns
	nodeUID := c.Node(t, node, nil)
	parent := "spiffe://example.org/sigil/agent/k8s_psat/test/" + string(nodeUID)

	// A hand-made entry under the same agent is never touched.
	hand, err := st.CreateEntries(ctx, "admin", []store.Entry{{
		SPIFFEID: "spiffe://example.org/hand", ParentID: parent,
		Selectors: []selector.Selector{{Type: "k8s", Value: "ns:" + ns}, {Type: "k8s", Value: "sa:cart"}},
	}})
	if err != nil {
		t.Fatal(err)
	}

	r := newReconciler(t, c, dyn, st, nil)
	run(t, r.RunLeading)

	cartID := "spiffe://example.org/ns/" + ns + "/sa/cart"
	handID := "spiffe://example.org/hand"
	cart := c.Pod(t, ns, "cart", "cart", node, nil)
	got := waitEntries(t, st, ns, handID, cartID)
	for _, e := range got {
		if e.SPIFFEID == cartID {
			want := []string{"k8s:ns:" + ns, "k8s:pod-uid:" + string(cart.UID), "k8s:sa:cart"}
			if e.ParentID != parent || !slices.Equal(selector.Strings(e.Selectors), want) {
				t.Fatalf("cart entry: parent %s selectors %v, want %s %v", e.ParentID, selector.Strings(e.Selectors), parent, want)
			}
		}
	}

	// A template replaces the default identity of the pods it matches.
	web := "web-" + ns
	createIdentity(t, dyn, identity(web, map[string]any{
		"podSelector":      map[string]any{"matchLabels": map[string]any{"app": "web"}},
		"spiffeIDTemplate": "spiffe://{{.TrustDomain}}/web/{{.Namespace}}/{{.PodName}}",
		"dnsNameTemplates": []any{"{{.PodName}}.{{.Namespace}}.svc"},
		"x509SVIDTTL":      "10m",
	}))
	c.Pod(t, ns, "web-1", "web", node, map[string]string{"app": "web"})
	webID := "spiffe://example.org/web/" + ns + "/web-1"
	got = waitEntries(t, st, ns, handID, cartID, webID)
	var webEntry store.Entry
	for _, e := range got {
		if e.SPIFFEID == webID {
			webEntry = e
		}
	}
	if webEntry.X509TTL != 10*time.Minute || !slices.Equal(webEntry.DNSNames, []string{"web-1." + ns + ".svc"}) {
		t.Fatalf("web entry %+v", webEntry)
	}
	waitFor(t, 10*time.Second, "status matchedPods 1", func() bool { return status(t, dyn, web).MatchedPods == 1 })

	// A template change updates the entry in place.
	u, err := dyn.Resource(k8sreg.GVR).Get(ctx, web, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(u.Object, "spiffe://{{.TrustDomain}}/v2/{{.PodName}}", "spec", "spiffeIDTemplate"); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(k8sreg.GVR).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got = waitEntries(t, st, ns, handID, cartID, "spiffe://example.org/v2/web-1")
	for _, e := range got {
		if e.SPIFFEID == "spiffe://example.org/v2/web-1" && e.ID != webEntry.ID {
			t.Errorf("template change replaced entry %s with %s; want an update in place", webEntry.ID, e.ID)
		}
	}

	// A pod that stops matching falls back to the default identity.
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"app": "other"}
	if _, err := c.Client.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, st, ns, handID, cartID, "spiffe://example.org/ns/"+ns+"/sa/web")
	waitFor(t, 10*time.Second, "status matchedPods 0", func() bool { return status(t, dyn, web).MatchedPods == 0 })

	// A template that fails for a pod reports it in status; the pod keeps no entry from it.
	bad := "bad-" + ns
	createIdentity(t, dyn, identity(bad, map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}},
		"podSelector":       map[string]any{"matchLabels": map[string]any{"app": "other"}},
		"spiffeIDTemplate":  "spiffe://{{.TrustDomain}}/{{.PodLabels.missing}}",
	}))
	waitFor(t, 10*time.Second, "template error in status", func() bool {
		return strings.Contains(status(t, dyn, bad).TemplateError, "missing")
	})
	waitEntries(t, st, ns, handID, cartID)

	// Pods going take their entries with them; namespaces changing labels re-match.
	deletePod(t, c, ns, "cart")
	deletePod(t, c, ns, "web-1")
	waitEntries(t, st, ns, handID)
	if e, err := st.GetEntry(ctx, hand[0].ID); err != nil || e.Revision != hand[0].Revision {
		t.Fatalf("hand-made entry changed: %+v %v", e, err)
	}
}

func TestNamespaceSelector(t *testing.T) {
	c := kubetest.Start(t)
	dyn := applyCRD(t, c)
	st := openStore(t)
	ctx := context.Background()
	ns := c.Namespace(t, "tenant")
	c.ServiceAccount(t, ns, "app")
	node := "node-" + ns
	c.Node(t, node, nil)
	name := "tenant-" + ns
	createIdentity(t, dyn, identity(name, map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"tier": "gold"}},
		"spiffeIDTemplate":  "spiffe://{{.TrustDomain}}/gold/{{.Namespace}}/{{.ServiceAccount}}",
	}))
	run(t, newReconciler(t, c, dyn, st, nil).RunLeading)
	c.Pod(t, ns, "app", "app", node, nil)
	waitEntries(t, st, ns, "spiffe://example.org/ns/"+ns+"/sa/app")

	n, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	n.Labels["tier"] = "gold"
	if _, err := c.Client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEntries(t, st, ns, "spiffe://example.org/gold/"+ns+"/app")
	deletePod(t, c, ns, "app")
	waitEntries(t, st, ns)
}

func TestCRDRefusesBadValues(t *testing.T) {
	c := kubetest.Start(t)
	dyn := applyCRD(t, c)
	for _, tc := range []struct {
		name string
		spec map[string]any
		want string
	}{
		{"not spiffe", map[string]any{"spiffeIDTemplate": "https://{{.TrustDomain}}/x"}, "must start with spiffe://"},
		{"query", map[string]any{"spiffeIDTemplate": "spiffe://{{.TrustDomain}}/x?y"}, "no query"},
		{"ttl too short", map[string]any{"x509SVIDTTL": "1s"}, "between 1m and 720h"},
		{"ttl not a duration", map[string]any{"jwtSVIDTTL": "soon"}, "between 30s and 24h"},
		{"bad operator", map[string]any{"podSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "a", "operator": "Near"}}}}, "Unsupported value"},
		{"dns space", map[string]any{"dnsNameTemplates": []any{"a b"}}, "no spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dyn.Resource(k8sreg.GVR).Create(context.Background(), identity("bad-crd", tc.spec), metav1.CreateOptions{})
			if err == nil {
				_ = dyn.Resource(k8sreg.GVR).Delete(context.Background(), "bad-crd", metav1.DeleteOptions{})
				t.Fatal("accepted")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want Invalid with %q", err, tc.want)
			}
		})
	}
	// The default template fills in.
	u, err := dyn.Resource(k8sreg.GVR).Create(context.Background(), identity("defaulted", map[string]any{}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dyn.Resource(k8sreg.GVR).Delete(context.Background(), "defaulted", metav1.DeleteOptions{})
	if got, _, _ := unstructured.NestedString(u.Object, "spec", "spiffeIDTemplate"); got != k8sreg.DefaultSPIFFEIDTemplate {
		t.Fatalf("default template %q", got)
	}
}

// TestLeaderHandover runs two reconcilers on one store: exactly one
// reconciles, and the one taking over writes nothing for pods already done.
func TestLeaderHandover(t *testing.T) {
	c := kubetest.Start(t)
	dyn := applyCRD(t, c)
	st := openStore(t)
	ctx := context.Background()
	ns := c.Namespace(t, "ha")
	c.ServiceAccount(t, ns, "app")
	node := "node-" + ns
	c.Node(t, node, nil)
	leaseNS := c.Namespace(t, "lease")
	var want []string
	for i := range 20 {
		c.Pod(t, ns, fmt.Sprintf("app-%d", i), "app", node, nil)
	}
	want = append(want, slices.Repeat([]string{"spiffe://example.org/ns/" + ns + "/sa/app"}, 20)...)

	type obs struct {
		who string
		res k8sreg.Result
	}
	passes := make(chan obs, 1000)
	lease := func(id string) k8sreg.Lease {
		return k8sreg.Lease{Namespace: leaseNS, Name: "registrar", Identity: id,
			Duration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond}
	}
	mk := func(id string) func(ctx context.Context) error {
		r := newReconciler(t, c, dyn, st, func(res k8sreg.Result) {
			select {
			case passes <- obs{id, res}:
			default:
			}
		})
		return func(ctx context.Context) error { return r.Run(ctx, lease(id)) }
	}
	stopA := run(t, mk("a"))
	waitEntries(t, st, ns, want...)
	stopB := run(t, mk("b"))
	time.Sleep(time.Second) // b stands but must not lead
	rev, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for len(passes) > 0 {
		if o := <-passes; o.who != "a" {
			t.Fatalf("%s reconciled while a held the lease", o.who)
		}
	}

	stopA() // releases the lease
	deadline := time.After(15 * time.Second)
	for {
		var o obs
		select {
		case o = <-passes:
		case <-deadline:
			t.Fatal("b did not take over")
		}
		if o.who != "b" {
			continue
		}
		if o.res.Err != nil || o.res.Created+o.res.Updated+o.res.Deleted != 0 {
			t.Fatalf("b's first pass after take-over: %+v; want no writes", o.res)
		}
		break
	}
	if now, _ := st.Revision(ctx); now != rev {
		t.Fatalf("store revision %d → %d across the hand-over", rev, now)
	}
	c.Pod(t, ns, "late", "app", node, nil)
	waitEntries(t, st, ns, append(want, "spiffe://example.org/ns/"+ns+"/sa/app")...)
	stopB()
}
