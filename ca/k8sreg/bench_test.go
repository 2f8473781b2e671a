package k8sreg_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/sigilhq/sigil/ca/k8sreg"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/kubetest"
)

// BenchmarkTemplateChange measures one reconcile pass after a SigilIdentity
// template change that gives every one of N pods (default 10,000;
// SIGIL_K8SREG_BENCH_PODS) a new SPIFFE ID: N entry updates in SQLite, or
// in PostgreSQL with SIGIL_K8SREG_BENCH_STORE=postgres.
//
//	go test ./ca/k8sreg -run '^$' -bench TemplateChange -benchtime 3x
//	SIGIL_K8SREG_BENCH_STORE=postgres go test ./ca/k8sreg -run '^$' -bench TemplateChange -benchtime 3x
func BenchmarkTemplateChange(b *testing.B) {
	n := 10000
	if s := os.Getenv("SIGIL_K8SREG_BENCH_PODS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("SIGIL_K8SREG_BENCH_PODS=%q: want a positive number", s)
		}
	}
	c := kubetest.Start(b)
	dyn := applyCRD(b, c)
	backend := os.Getenv("SIGIL_K8SREG_BENCH_STORE")
	if backend == "" {
		backend = "sqlite"
	}
	st := openBackend(b, backend)
	ctx := context.Background()
	ns := c.Namespace(b, "bench")
	c.ServiceAccount(b, ns, "app")
	node := "node-" + ns
	c.Node(b, node, nil)
	name := "bench-" + ns
	createIdentity(b, dyn, identity(name, map[string]any{
		"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}},
		"spiffeIDTemplate":  "spiffe://{{.TrustDomain}}/v0/{{.PodName}}",
	}))

	start := time.Now()
	var failed atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	no := false
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				_, err := c.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%05d", i)},
					Spec: corev1.PodSpec{ServiceAccountName: "app", NodeName: node, AutomountServiceAccountToken: &no,
						Containers: []corev1.Container{{Name: "app", Image: "example.org/app:1"}}},
				}, metav1.CreateOptions{})
				if err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatalf("create pods: %v", err)
	}
	b.Cleanup(func() {
		zero := int64(0)
		_ = c.Client.CoreV1().Pods(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	})
	b.Logf("created %d pods in %s", n, time.Since(start).Round(time.Millisecond))

	passes := make(chan k8sreg.Result, 100)
	start = time.Now()
	run(b, newReconciler(b, c, dyn, st, func(r k8sreg.Result) { passes <- r }).RunLeading)
	first := waitPass(b, passes, func(r k8sreg.Result) bool { return r.Created > 0 })
	b.Logf("first pass: %d pods, %d entries created in %s (%s from start, with informer sync)",
		first.Pods, first.Created, first.Took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if first.Created != n {
		b.Fatalf("first pass created %d entries, want %d", first.Created, n)
	}

	b.ResetTimer()
	for i := range b.N {
		u, err := dyn.Resource(k8sreg.GVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := unstructured.SetNestedField(u.Object, fmt.Sprintf("spiffe://{{.TrustDomain}}/v%d/{{.PodName}}", i+1), "spec", "spiffeIDTemplate"); err != nil {
			b.Fatal(err)
		}
		changed, cpu := time.Now(), cpuTime(b)
		if _, err := dyn.Resource(k8sreg.GVR).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		r := waitPass(b, passes, func(r k8sreg.Result) bool { return r.Updated > 0 })
		if r.Updated != n {
			b.Fatalf("pass updated %d entries, want %d", r.Updated, n)
		}
		b.Logf("template change: %d entries updated, pass %s, change→done %s, CPU of this process %s (%s store), load average %s",
			r.Updated, r.Took.Round(time.Millisecond), time.Since(changed).Round(time.Millisecond),
			(cpuTime(b) - cpu).Round(time.Millisecond), backend, loadavg())
	}
	b.StopTimer()
	entries, err := st.ListEntries(ctx, store.EntryFilter{Limit: 1})
	if err != nil || len(entries) == 0 {
		b.Fatalf("entries after the bench: %v %v", entries, err)
	}
}

// cpuTime is the user and system CPU time this process used so far: the
// reconciler, its informers and, with SQLite, the store. On a loaded
// machine it says more than wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(raw))[:3], " ")
}

func waitPass(b *testing.B, passes <-chan k8sreg.Result, ok func(k8sreg.Result) bool) k8sreg.Result {
	b.Helper()
	deadline := time.After(10 * time.Minute)
	for {
		select {
		case r := <-passes:
			if r.Err != nil {
				b.Fatalf("reconcile: %v", r.Err)
			}
			if ok(r) {
				return r
			}
		case <-deadline:
			b.Fatal("no reconcile pass in 10 minutes")
		}
	}
}
