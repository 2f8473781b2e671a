package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/clock"
)

// Actor is the audit actor of every change the reconciler makes.
const Actor = "k8s-registrar"

// Entries is what the reconciler needs from the datastore.
type Entries interface {
	CreateEntries(ctx context.Context, actor string, entries []store.Entry) ([]store.Entry, error)
	UpdateEntries(ctx context.Context, actor string, entries []store.Entry) ([]store.Entry, error)
	DeleteEntries(ctx context.Context, actor string, ids []string) ([]store.Entry, error)
	ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error)
}

// Config configures a Reconciler.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// Cluster names the cluster in agent IDs
	// (spiffe://TD/sigil/agent/k8s_psat/<cluster>/<node-uid>).
	Cluster string
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Store   Entries
	// NoDefaultIdentity turns off the identity every pod that no
	// SigilIdentity matches gets (DefaultSPIFFEIDTemplate).
	NoDefaultIdentity bool
	// Batch is how long changes gather before one reconcile (default 100ms).
	Batch time.Duration
	// Resync is how often the store is compared with the cluster even with
	// no change seen (default 5m): it repairs hand deletions of entries.
	Resync time.Duration
	// SyncTimeout bounds the first listing of the cluster (default 1m).
	SyncTimeout time.Duration
	// BatchSize bounds the entries of one store call (CreateEntries,
	// UpdateEntries, DeleteEntries), each one transaction: default 1000,
	// at most store.MaxEntryBatch.
	BatchSize int
	Clock     clock.Clock // default real
	Logger    *slog.Logger
	// Observe, when set, is called after each reconcile pass.
	Observe func(Result)
}

// Result is what one reconcile pass did.
type Result struct {
	Pods                      int // pods with at least one entry
	Created, Updated, Deleted int
	Took                      time.Duration
	Err                       error
}

// Reconciler keeps the store's Kubernetes entries equal to what the
// cluster's pods and SigilIdentity objects ask for.
type Reconciler struct {
	cfg     Config
	planner planner
	log     *slog.Logger
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Reconciler, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("k8sreg: trust domain required")
	}
	if cfg.Cluster == "" {
		return nil, errors.New("k8sreg: cluster name required")
	}
	if _, err := spiffeid.FromSegments(cfg.TrustDomain, "sigil", "agent", "k8s_psat", cfg.Cluster); err != nil {
		return nil, fmt.Errorf("k8sreg: cluster name %q: %w", cfg.Cluster, err)
	}
	if cfg.Client == nil || cfg.Dynamic == nil || cfg.Store == nil {
		return nil, errors.New("k8sreg: client, dynamic client and store required")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100 * time.Millisecond
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Minute
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = time.Minute
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.BatchSize > store.MaxEntryBatch {
		return nil, fmt.Errorf("k8sreg: batch size %d: at most %d", cfg.BatchSize, store.MaxEntryBatch)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := planner{td: cfg.TrustDomain, cluster: cfg.Cluster}
	if !cfg.NoDefaultIdentity {
		p.deflt = defaultIdentity()
	}
	return &Reconciler{cfg: cfg, planner: p, log: cfg.Logger.With("component", "k8sreg")}, nil
}

// strip keeps only what the reconciler reads of pods, nodes and
// namespaces, so that 10,000 cached pods stay small.
func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, Labels: o.Labels, ResourceVersion: o.ResourceVersion},
			Spec:       corev1.PodSpec{NodeName: o.Spec.NodeName, ServiceAccountName: o.Spec.ServiceAccountName},
			Status:     corev1.PodStatus{Phase: o.Status.Phase},
		}, nil
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}}, nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, Labels: o.Labels, ResourceVersion: o.ResourceVersion}}, nil
	}
	return obj, nil
}

type caches struct {
	pods, namespaces, nodes, identities cache.Store
}

// RunLeading reconciles until ctx ends: it starts informers, waits for
// them to sync, then reconciles after every batch of changes and every
// resync period. Use Run to do this only while holding the lease.
func (r *Reconciler) RunLeading(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0, informers.WithTransform(strip))
	podInf := factory.Core().V1().Pods().Informer()
	nsInf := factory.Core().V1().Namespaces().Informer()
	nodeInf := factory.Core().V1().Nodes().Informer()
	dyn := dynamicinformer.NewDynamicSharedInformerFactory(r.cfg.Dynamic, 0)
	idInf := dyn.ForResource(GVR).Informer()

	onChange := func(relevant func(old, cur any) bool) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { poke() },
			DeleteFunc: func(any) { poke() },
			UpdateFunc: func(old, cur any) {
				if relevant(old, cur) {
					poke()
				}
			},
		}
	}
	for _, h := range []struct {
		inf      cache.SharedIndexInformer
		relevant func(old, cur any) bool
	}{
		{podInf, podChanged},
		{nsInf, labelsChanged},
		{nodeInf, func(old, cur any) bool { return uidOf(old) != uidOf(cur) }},
		{idInf, generationChanged},
	} {
		if _, err := h.inf.AddEventHandler(onChange(h.relevant)); err != nil {
			return fmt.Errorf("k8sreg: watch: %w", err)
		}
	}
	factory.Start(ctx.Done())
	dyn.Start(ctx.Done())
	defer factory.Shutdown()
	defer dyn.Shutdown()
	syncCtx, stop := context.WithTimeout(ctx, r.cfg.SyncTimeout)
	synced := cache.WaitForCacheSync(syncCtx.Done(), podInf.HasSynced, nsInf.HasSynced, nodeInf.HasSynced, idInf.HasSynced)
	stop()
	if !synced {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("k8sreg: watches did not sync in %s (is the SigilIdentity CRD applied, and may the CA list pods, nodes, namespaces and sigilidentities?)", r.cfg.SyncTimeout)
	}
	c := caches{pods: podInf.GetStore(), namespaces: nsInf.GetStore(), nodes: nodeInf.GetStore(), identities: idInf.GetStore()}
	r.log.Info("kubernetes caches synced", "pods", len(c.pods.ListKeys()), "cluster", r.cfg.Cluster)

	backoff := time.Duration(0)
	for {
		res := r.reconcile(ctx, c)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.Resync
		if res.Err != nil {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			wait = backoff
			r.log.Warn("reconcile failed", "err", res.Err, "retry_in", backoff)
		} else {
			backoff = 0
		}
		t := r.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-kick:
			t.Stop()
			// Gather the burst: one pass for many events.
			if !clock.Sleep(ctx, r.cfg.Clock, r.cfg.Batch) {
				return nil
			}
			select {
			case <-kick:
			default:
			}
		case <-t.C():
		}
	}
}

func podChanged(old, cur any) bool {
	a, ok1 := old.(*corev1.Pod)
	b, ok2 := cur.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return a.Spec.NodeName != b.Spec.NodeName || a.Spec.ServiceAccountName != b.Spec.ServiceAccountName ||
		a.Status.Phase != b.Status.Phase || !mapsEqual(a.Labels, b.Labels)
}

func labelsChanged(old, cur any) bool {
	a, ok1 := old.(metav1.Object)
	b, ok2 := cur.(metav1.Object)
	return !ok1 || !ok2 || !mapsEqual(a.GetLabels(), b.GetLabels())
}

func generationChanged(old, cur any) bool {
	a, ok1 := old.(metav1.Object)
	b, ok2 := cur.(metav1.Object)
	return !ok1 || !ok2 || a.GetGeneration() != b.GetGeneration()
}

func uidOf(obj any) string {
	if o, ok := obj.(metav1.Object); ok {
		return string(o.GetUID())
	}
	return ""
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// snapshotOf reads the caches.
func (r *Reconciler) snapshotOf(c caches) snapshot {
	s := snapshot{namespaces: map[string]map[string]string{}, nodes: map[string]string{}}
	for _, o := range c.pods.List() {
		if p, ok := o.(*corev1.Pod); ok {
			s.pods = append(s.pods, p)
		}
	}
	for _, o := range c.namespaces.List() {
		if ns, ok := o.(*corev1.Namespace); ok {
			s.namespaces[ns.Name] = ns.Labels
		}
	}
	for _, o := range c.nodes.List() {
		if n, ok := o.(*corev1.Node); ok {
			s.nodes[n.Name] = string(n.UID)
		}
	}
	for _, o := range c.identities.List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		si, err := FromUnstructured(u.Object)
		if err != nil {
			s.identities = append(s.identities, &compiled{name: u.GetName(), generation: u.GetGeneration(), err: err})
			continue
		}
		s.identities = append(s.identities, compile(si))
	}
	sort.Slice(s.identities, func(i, j int) bool { return s.identities[i].name < s.identities[j].name })
	return s
}

func (r *Reconciler) reconcile(ctx context.Context, c caches) (res Result) {
	start := r.cfg.Clock.Now()
	defer func() {
		res.Took = r.cfg.Clock.Now().Sub(start)
		if r.cfg.Observe != nil {
			r.cfg.Observe(res)
		}
	}()
	s := r.snapshotOf(c)
	p := r.planner.plan(s)
	res.Pods = len(p.entries)
	have, err := r.stored(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	ch := diff(p.entries, have)
	res.Created, res.Updated, res.Deleted, res.Err = r.apply(ctx, ch)
	if err := r.writeStatus(ctx, c, p.status); err != nil {
		res.Err = errors.Join(res.Err, err)
	}
	if !ch.empty() || res.Err != nil {
		r.log.Info("reconciled", "pods", res.Pods, "created", res.Created, "updated", res.Updated,
			"deleted", res.Deleted, "took", r.cfg.Clock.Now().Sub(start), "err", res.Err)
	}
	return res
}

// stored lists the reconciler's entries, by pod UID, a page at a time.
func (r *Reconciler) stored(ctx context.Context) (map[string][]store.Entry, error) {
	have := map[string][]store.Entry{}
	const page = 5000
	after := ""
	for {
		list, err := r.cfg.Store.ListEntries(ctx, store.EntryFilter{AfterID: after, Limit: page})
		if err != nil {
			return nil, fmt.Errorf("k8sreg: list entries: %w", err)
		}
		for _, e := range list {
			if uid, ok := r.planner.owner(e); ok {
				have[uid] = append(have[uid], e)
			}
		}
		if len(list) < page {
			return have, nil
		}
		after = list[len(list)-1].ID
	}
}

// apply writes ch in batches of BatchSize, each all or nothing: deletes
// first (so a replaced entry never collides with its successor), then
// updates guarded by revision, then creates. A failure stops the pass; the
// next one starts again from the store.
func (r *Reconciler) apply(ctx context.Context, ch changes) (created, updated, deleted int, err error) {
	n := r.cfg.BatchSize
	for i := 0; i < len(ch.delete); i += n {
		ids := make([]string, 0, n)
		for _, e := range ch.delete[i:min(i+n, len(ch.delete))] {
			ids = append(ids, e.ID)
		}
		done, err := r.deleteBatch(ctx, ids)
		deleted += done
		if err != nil {
			return created, updated, deleted, err
		}
	}
	for i := 0; i < len(ch.update); i += n {
		batch := ch.update[i:min(i+n, len(ch.update))]
		if _, err := r.cfg.Store.UpdateEntries(ctx, Actor, batch); err != nil {
			return created, updated, deleted, fmt.Errorf("k8sreg: update %d entries: %w", len(batch), err)
		}
		updated += len(batch)
	}
	for i := 0; i < len(ch.create); i += n {
		batch := ch.create[i:min(i+n, len(ch.create))]
		if _, err := r.cfg.Store.CreateEntries(ctx, Actor, batch); err != nil {
			return created, updated, deleted, fmt.Errorf("k8sreg: create %d entries: %w", len(batch), err)
		}
		created += len(batch)
	}
	return created, updated, deleted, nil
}

// deleteBatch deletes ids in one call. An entry someone else deleted
// meanwhile is what was wanted: it is dropped from the batch, which is
// tried again (at most once per ID).
func (r *Reconciler) deleteBatch(ctx context.Context, ids []string) (int, error) {
	gone := 0
	for len(ids) > 0 {
		out, err := r.cfg.Store.DeleteEntries(ctx, Actor, ids)
		var be *store.BatchError
		if errors.As(err, &be) && errors.Is(err, store.ErrNotFound) && be.Index >= 0 && be.Index < len(ids) {
			ids = slices.Delete(slices.Clone(ids), be.Index, be.Index+1)
			gone++
			continue
		}
		if err != nil {
			return gone, fmt.Errorf("k8sreg: delete %d entries: %w", len(ids), err)
		}
		return gone + len(out), nil
	}
	return gone, nil
}

// writeStatus updates the status of each SigilIdentity whose status differs.
func (r *Reconciler) writeStatus(ctx context.Context, c caches, status map[string]IdentityStatus) error {
	var errs []error
	for _, o := range c.identities.List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		want, ok := status[u.GetName()]
		if !ok {
			continue
		}
		cur := IdentityStatus{}
		if m, ok := u.Object["status"].(map[string]any); ok {
			_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &cur)
		}
		if cur == want {
			continue
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		u = u.DeepCopy()
		u.Object["status"] = obj
		if _, err := r.cfg.Dynamic.Resource(GVR).UpdateStatus(ctx, u, metav1.UpdateOptions{}); apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// The cache is behind the object: the watch brings it and a
			// later pass writes again if still needed.
			continue
		} else if err != nil {
			errs = append(errs, fmt.Errorf("k8sreg: status of sigilidentity %s: %w", u.GetName(), err))
		}
	}
	return errors.Join(errs...)
}
