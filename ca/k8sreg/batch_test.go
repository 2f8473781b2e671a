package k8sreg_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/sigilhq/sigil/ca/k8sreg"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/kubetest"
)

// flaky fails the failAt-th UpdateEntries call (counted from 1) and, when
// steal is set, deletes the first ID of the next DeleteEntries call itself
// just before it, as a concurrent admin would.
type flaky struct {
	k8sreg.Entries
	updates atomic.Int32
	failAt  atomic.Int32
	steal   atomic.Bool
}

func (f *flaky) UpdateEntries(ctx context.Context, actor string, es []store.Entry) ([]store.Entry, error) {
	if n := f.updates.Add(1); n == f.failAt.Load() {
		return nil, fmt.Errorf("update call %d: injected failure", n)
	}
	return f.Entries.UpdateEntries(ctx, actor, es)
}

func (f *flaky) DeleteEntries(ctx context.Context, actor string, ids []string) ([]store.Entry, error) {
	if f.steal.CompareAndSwap(true, false) {
		if _, err := f.Entries.DeleteEntries(ctx, "admin", ids[:1]); err != nil {
			return nil, err
		}
	}
	return f.Entries.DeleteEntries(ctx, actor, ids)
}

// A template change touching more pods than one batch updates every entry
// in place, a batch at a time: a failed batch leaves the batches before it
// written and itself and those after it untouched, and the next pass
// finishes the job. Pods going delete their entries in batches too, even
// when someone deleted one of them first.
func TestTemplateChangeInBatches(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			c := kubetest.Start(t)
			dyn := applyCRD(t, c)
			st := &flaky{Entries: openBackend(t, backend)}
			ctx := context.Background()
			ns := c.Namespace(t, "batch")
			c.ServiceAccount(t, ns, "app")
			node := "node-" + ns
			c.Node(t, node, nil)
			name := "batch-" + ns
			createIdentity(t, dyn, identity(name, map[string]any{
				"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}},
				"spiffeIDTemplate":  "spiffe://{{.TrustDomain}}/v0/{{.Namespace}}/{{.PodName}}",
			}))
			const pods, batch = 25, 7
			var want []string
			for i := range pods {
				pod := fmt.Sprintf("p-%02d", i)
				c.Pod(t, ns, pod, "app", node, nil)
				want = append(want, "spiffe://example.org/v0/"+ns+"/"+pod)
			}

			// A failed pass reports itself here with what the store held
			// at that moment (before the retry can run).
			type failedPass struct {
				res   k8sreg.Result
				held  []store.Entry
				lsErr error
			}
			failed := make(chan failedPass, 1)
			r, err := k8sreg.New(k8sreg.Config{
				TrustDomain: td, Cluster: "test", Client: c.Client, Dynamic: dyn, Store: st,
				Batch: 20 * time.Millisecond, BatchSize: batch,
				Observe: func(res k8sreg.Result) {
					if res.Err == nil {
						return
					}
					held, err := st.ListEntries(ctx, store.EntryFilter{})
					select {
					case failed <- failedPass{res, held, err}:
					default:
					}
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			run(t, r.RunLeading)
			before := map[string]string{} // pod name → entry ID
			for _, e := range waitEntries(t, st, ns, want...) {
				before[e.SPIFFEID[strings.LastIndex(e.SPIFFEID, "/")+1:]] = e.ID
			}

			st.failAt.Store(st.updates.Load() + 2)
			u, err := dyn.Resource(k8sreg.GVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedField(u.Object, "spiffe://{{.TrustDomain}}/v1/{{.Namespace}}/{{.PodName}}", "spec", "spiffeIDTemplate"); err != nil {
				t.Fatal(err)
			}
			if _, err := dyn.Resource(k8sreg.GVR).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			var f failedPass
			select {
			case f = <-failed:
			case <-time.After(30 * time.Second):
				t.Fatal("no failed pass in 30s after the template change")
			}
			if f.lsErr != nil {
				t.Fatal(f.lsErr)
			}
			if f.res.Updated != batch || !strings.Contains(f.res.Err.Error(), "injected failure") {
				t.Fatalf("failed pass: updated %d (err %v), want %d and the injected failure", f.res.Updated, f.res.Err, batch)
			}
			v0, v1 := 0, 0
			for _, e := range f.held {
				switch {
				case strings.Contains(e.SPIFFEID, "/v0/"+ns+"/"):
					v0++
				case strings.Contains(e.SPIFFEID, "/v1/"+ns+"/"):
					v1++
				}
			}
			if v1 != batch || v0 != pods-batch {
				t.Fatalf("after the failed batch the store holds %d new and %d old entries, want %d and %d", v1, v0, batch, pods-batch)
			}

			for i := range want {
				want[i] = strings.Replace(want[i], "/v0/", "/v1/", 1)
			}
			for _, e := range waitEntries(t, st, ns, want...) {
				pod := e.SPIFFEID[strings.LastIndex(e.SPIFFEID, "/")+1:]
				if before[pod] != e.ID {
					t.Errorf("pod %s: entry %s replaced by %s; want an update in place", pod, before[pod], e.ID)
				}
			}

			st.steal.Store(true)
			zero := int64(0)
			for i := range 10 {
				if err := c.Client.CoreV1().Pods(ns).Delete(ctx, fmt.Sprintf("p-%02d", i), metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
					t.Fatal(err)
				}
			}
			waitEntries(t, st, ns, want[10:]...)
			if st.steal.Load() {
				t.Fatal("no DeleteEntries call was made")
			}
			select {
			case f := <-failed:
				t.Fatalf("a pass failed after the retry: %v", f.res.Err)
			default:
			}
		})
	}
}
