package k8sreg

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

func testPod(ns, name, sa, node string, lbl map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Labels: lbl},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
	}
}

func TestPlan(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	p := planner{td: td, cluster: "c1", deflt: defaultIdentity()}
	web := compile(SigilIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: 3},
		Spec: IdentitySpec{
			PodSelector:      &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			SPIFFEIDTemplate: "spiffe://{{.TrustDomain}}/web/{{.PodLabels.tier}}",
			DNSNameTemplates: []string{"{{.PodName}}.{{.Namespace}}.svc"},
			X509SVIDTTL:      "10m", Admin: true,
		},
	})
	bad := compile(SigilIdentity{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: IdentitySpec{SPIFFEIDTemplate: "spiffe://{{.Nope"}})
	s := snapshot{
		pods: []*corev1.Pod{
			testPod("shop", "cart", "cart", "n1", nil),
			testPod("shop", "web-1", "web", "n1", map[string]string{"app": "web", "tier": "front"}),
			testPod("shop", "web-2", "web", "n1", map[string]string{"app": "web"}), // no tier label
			testPod("shop", "pending", "cart", "", nil),                            // not scheduled
			testPod("shop", "lost", "cart", "gone", nil),                           // unknown node
		},
		namespaces: map[string]map[string]string{"shop": nil},
		nodes:      map[string]string{"n1": "node-uid-1"},
		identities: []*compiled{bad, web},
	}
	got := p.plan(s)
	if len(got.entries) != 2 {
		t.Fatalf("entries for %d pods, want 2 (cart, web-1): %v", len(got.entries), got.entries)
	}
	cart := got.entries["uid-shop-cart"]
	if len(cart) != 1 || cart[0].SPIFFEID != "spiffe://example.org/ns/shop/sa/cart" ||
		cart[0].ParentID != "spiffe://example.org/sigil/agent/k8s_psat/c1/node-uid-1" {
		t.Fatalf("cart: %+v", cart)
	}
	wantSel := []string{"k8s:ns:shop", "k8s:pod-uid:uid-shop-cart", "k8s:sa:cart"}
	if got := selector.Strings(cart[0].Selectors); strings.Join(got, ",") != strings.Join(wantSel, ",") {
		t.Fatalf("selectors %v, want %v", got, wantSel)
	}
	w := got.entries["uid-shop-web-1"]
	if len(w) != 1 || w[0].SPIFFEID != "spiffe://example.org/web/front" || !w[0].Admin ||
		w[0].X509TTL.String() != "10m0s" || len(w[0].DNSNames) != 1 || w[0].DNSNames[0] != "web-1.shop.svc" {
		t.Fatalf("web-1: %+v", w)
	}
	if st := got.status["web"]; st.MatchedPods != 1 || st.ObservedGeneration != 3 || !strings.Contains(st.TemplateError, "web-2") {
		t.Fatalf("web status %+v", st)
	}
	if st := got.status["bad"]; st.TemplateError == "" || st.MatchedPods != 0 {
		t.Fatalf("bad status %+v", st)
	}

	// Without the default identity only templated pods get entries.
	p.deflt = nil
	if n := len(p.plan(s).entries); n != 1 {
		t.Fatalf("no default: %d pods with entries, want 1", n)
	}
}

func TestDiff(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	p := planner{td: td, cluster: "c1"}
	e := func(id, uid string) store.Entry {
		return store.Entry{SPIFFEID: "spiffe://example.org/" + id, ParentID: p.agentPrefix() + "n",
			Selectors: []selector.Selector{{Type: "k8s", Value: "pod-uid:" + uid}}}
	}
	stored := func(x store.Entry, id string) store.Entry { x.ID, x.Revision = id, 7; return x }
	want := map[string][]store.Entry{"a": {e("a", "a")}, "b": {e("b2", "b")}, "c": {e("c", "c")}}
	have := map[string][]store.Entry{"a": {stored(e("a", "a"), "1")}, "b": {stored(e("b", "b"), "2")}, "d": {stored(e("d", "d"), "4")}}
	ch := diff(want, have)
	if len(ch.create) != 1 || ch.create[0].SPIFFEID != "spiffe://example.org/c" {
		t.Errorf("create %+v", ch.create)
	}
	if len(ch.update) != 1 || ch.update[0].ID != "2" || ch.update[0].Revision != 7 || ch.update[0].SPIFFEID != "spiffe://example.org/b2" {
		t.Errorf("update %+v", ch.update)
	}
	if len(ch.delete) != 1 || ch.delete[0].ID != "4" {
		t.Errorf("delete %+v", ch.delete)
	}
	if !diff(want, want).empty() {
		t.Error("diff of equal sets is not empty")
	}

	// Ownership: only this cluster's agents and a pod-uid selector.
	for _, c := range []struct {
		name string
		e    store.Entry
		ok   bool
	}{
		{"ours", e("a", "a"), true},
		{"other cluster", store.Entry{ParentID: "spiffe://example.org/sigil/agent/k8s_psat/c2/n", Selectors: e("a", "a").Selectors}, false},
		{"hand-made", store.Entry{ParentID: p.agentPrefix() + "n", Selectors: []selector.Selector{{Type: "k8s", Value: "sa:x"}}}, false},
	} {
		if _, ok := p.owner(c.e); ok != c.ok {
			t.Errorf("%s: owned %v, want %v", c.name, ok, c.ok)
		}
	}
}
