package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corev1informers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sigilhq/sigil/agent/attest"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/clock"
	"github.com/sigilhq/sigil/internal/selector"
)

// Type is the selector type this attestor makes.
const Type = "k8s"

// SelectorKeys lists the keys of the selectors Attest makes
// (k8s:KEY:VALUE), for the table of selector types entries may use.
func SelectorKeys() []string {
	return []string{"ns", "sa", "pod-name", "pod-uid", "pod-label", "container-name", "container-image", "node-name"}
}

// DefaultWait is how long an attestation waits for the watch to show a
// container it does not know yet.
const DefaultWait = 5 * time.Second

// ErrRefused is wrapped when a process in a pod's container cannot be
// attested: the pod or container is not (or no longer) in the node's
// watch. The error says which and why. It matches attest.ErrRefused.
var ErrRefused error = refused{}

type refused struct{}

func (refused) Error() string        { return "kubernetes workload refused" }
func (refused) Is(target error) bool { return target == attest.ErrRefused }

// deletedMemory bounds how many deleted pods' UIDs are remembered, so a
// process of a deleted pod is refused at once rather than after the wait.
const deletedMemory = 4096

const uidIndex = "uid"

// Config configures an Attestor.
type Config struct {
	// Client reads pods; it needs list and watch on pods (of this node).
	Client kubernetes.Interface
	// NodeName is the node this agent runs on; only its pods are watched.
	NodeName string
	// Wait bounds how long an attestation waits for a container the watch
	// has not seen yet. Default DefaultWait.
	Wait time.Duration
	// ProcDir is where procfs is mounted (/proc/PID/cgroup is read from
	// it). Default "/proc".
	ProcDir string
	// Clock times the wait. Default the real clock.
	Clock clock.Clock
	// Logger receives watch events worth a line. Default: discard.
	Logger *slog.Logger
	// Metrics, if set, registers the attestor's collectors (see
	// NewMetrics for their names).
	Metrics prometheus.Registerer
}

// Attestor makes k8s selectors for a process running in a container of a
// pod on this node. Run must be running for Attest to succeed. It is safe
// for concurrent use.
type Attestor struct {
	node    string
	wait    time.Duration
	procDir string
	clock   clock.Clock
	log     *slog.Logger
	inf     cache.SharedIndexInformer

	m *metrics

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every watch event
	deleted map[string]struct{}
	order   []string // deleted UIDs, oldest first, at most deletedMemory
	// watches holds, per pod UID, the channel open streams of that pod's
	// processes wait on (see Watch). An entry lives while a stream holds
	// it, until the pod changes: at most one per open stream.
	watches map[string]*podWatch

	attested, waited, refused atomic.Uint64
}

// podWatch is closed when its pod is deleted or changes what its
// processes would be attested as.
type podWatch struct {
	ch   chan struct{}
	refs int
}

// New returns an Attestor. It starts nothing: call Run.
func New(cfg Config) (*Attestor, error) {
	if cfg.Client == nil {
		return nil, errors.New("k8s attestor: no kubernetes client")
	}
	if cfg.NodeName == "" {
		return nil, errors.New("k8s attestor: node name is empty")
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Wait < 0 {
		return nil, fmt.Errorf("k8s attestor: wait %s is negative", cfg.Wait)
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	node := cfg.NodeName
	inf := corev1informers.NewFilteredPodInformer(cfg.Client, metav1.NamespaceAll, 0,
		cache.Indexers{uidIndex: func(obj any) ([]string, error) {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, nil
			}
			return []string{string(p.UID)}, nil
		}},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		})
	if err := inf.SetTransform(trimPod); err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	a := &Attestor{
		node:    node,
		wait:    cfg.Wait,
		procDir: strings.TrimRight(cfg.ProcDir, "/"),
		clock:   cfg.Clock,
		log:     cfg.Logger,
		inf:     inf,
		changed: make(chan struct{}),
		deleted: make(map[string]struct{}),
		watches: make(map[string]*podWatch),
	}
	a.m = newMetrics(a)
	if cfg.Metrics != nil {
		for _, c := range a.m.collectors() {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("k8s attestor: register metrics: %w", err)
			}
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.notify("") },
		UpdateFunc: func(oldObj, newObj any) {
			a.notify("")
			o, ok1 := oldObj.(*corev1.Pod)
			n, ok2 := newObj.(*corev1.Pod)
			if ok1 && ok2 && !sameIdentity(o, n) {
				a.podChanged(string(n.UID), "changed")
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			uid := ""
			if p, ok := obj.(*corev1.Pod); ok {
				uid = string(p.UID)
			}
			// Recorded as deleted first: a stream woken below attests
			// again and must be refused at once.
			a.notify(uid)
			if uid != "" {
				a.podChanged(uid, "deleted")
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	return a, nil
}

// sameIdentity reports whether the selectors made for any process of the
// pod are the same under o and n. Phase, readiness and resource version
// changes do not wake open streams.
func sameIdentity(o, n *corev1.Pod) bool {
	return maps.Equal(o.Labels, n.Labels) &&
		o.Namespace == n.Namespace && o.Name == n.Name &&
		equality.Semantic.DeepEqual(o.Spec, n.Spec) &&
		equality.Semantic.DeepEqual(o.Status.ContainerStatuses, n.Status.ContainerStatuses) &&
		equality.Semantic.DeepEqual(o.Status.InitContainerStatuses, n.Status.InitContainerStatuses) &&
		equality.Semantic.DeepEqual(o.Status.EphemeralContainerStatuses, n.Status.EphemeralContainerStatuses)
}

// Watch implements attest.Watcher: the channel is closed when the pod the
// process behind info runs in is deleted or changes (labels, containers,
// images). A process in no pod, or whose cgroup cannot be read, gets a
// nil channel: Attest decides about it.
func (a *Attestor) Watch(info peercred.Info) (<-chan struct{}, func()) {
	if info.PID <= 0 {
		return nil, func() {}
	}
	c, err := a.readCgroup(info.PID)
	if err != nil {
		return nil, func() {}
	}
	uid := c.PodUID
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.watches[uid]
	if w == nil {
		w = &podWatch{ch: make(chan struct{})}
		a.watches[uid] = w
	}
	w.refs++
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			w.refs--
			if w.refs == 0 && a.watches[uid] == w {
				delete(a.watches, uid)
			}
		})
	}
}

// podChanged wakes the open streams of the pod's processes.
func (a *Attestor) podChanged(uid, why string) {
	a.mu.Lock()
	w := a.watches[uid]
	if w != nil {
		close(w.ch)
		delete(a.watches, uid)
	}
	a.mu.Unlock()
	if w != nil {
		a.m.streamWakes.WithLabelValues(why).Inc()
		a.log.Info("pod changed: its open workload streams attest again", "pod_uid", uid, "change", why)
	}
}

// streamWatches is how many pods open streams watch.
func (a *Attestor) streamWatches() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.watches)
}

// Run watches this node's pods until ctx ends.
func (a *Attestor) Run(ctx context.Context) error {
	a.log.Info("watching this node's pods for workload attestation", "node", a.node)
	a.inf.RunWithContext(ctx)
	return nil
}

// Synced reports whether the watch has listed the node's pods once.
func (a *Attestor) Synced() bool { return a.inf.HasSynced() }

// Stats counts attestations since New.
type Stats struct {
	Attested uint64 // processes of a known container, selectors given
	Waited   uint64 // attestations that had to wait for the watch
	Refused  uint64 // processes in a pod's container that were refused
}

// Stats returns counts since New.
func (a *Attestor) Stats() Stats {
	return Stats{Attested: a.attested.Load(), Waited: a.waited.Load(), Refused: a.refused.Load()}
}

// notify wakes every waiting attestation; uid, if set, names a deleted pod.
func (a *Attestor) notify(deletedUID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if deletedUID != "" {
		if _, ok := a.deleted[deletedUID]; !ok {
			a.deleted[deletedUID] = struct{}{}
			a.order = append(a.order, deletedUID)
			if len(a.order) > deletedMemory {
				delete(a.deleted, a.order[0])
				a.order = a.order[1:]
			}
		}
	}
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *Attestor) changes() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

func (a *Attestor) wasDeleted(uid string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.deleted[uid]
	return ok
}

// Attest returns the k8s selectors of the container the process behind
// info runs in: k8s:ns, k8s:sa, k8s:pod-name, k8s:pod-uid,
// k8s:pod-label:K:V, k8s:node-name, k8s:container-name and
// k8s:container-image (the image as the pod spec and the status name it,
// and the image ID). A process in no pod yields an error matching
// ErrNotInPod (and attest.ErrNotApplicable). A container the watch does
// not show yet is waited for, up to the configured wait; then, or at once
// for a deleted pod, the error wraps ErrRefused and says why.
func (a *Attestor) Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error) {
	if info.PID <= 0 {
		return nil, fmt.Errorf("k8s attest: invalid pid %d", info.PID)
	}
	c, err := a.readCgroup(info.PID)
	// Check even when reading failed: an exited peer is the likeliest
	// cause. After a successful read, what was read belongs to the peer.
	if cerr := info.Check(); cerr != nil {
		a.m.observe(cerr)
		return nil, fmt.Errorf("k8s attest pid %d: %w", info.PID, cerr)
	}
	if err != nil {
		a.m.observe(err)
		return nil, fmt.Errorf("k8s attest pid %d: %w", info.PID, err)
	}
	pod, ctr, err := a.find(ctx, c)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			a.refused.Add(1)
		}
		a.m.observe(err)
		return nil, fmt.Errorf("k8s attest pid %d: %w", info.PID, err)
	}
	a.attested.Add(1)
	a.m.observe(nil)
	return podSelectors(pod, ctr), nil
}

func (a *Attestor) readCgroup(pid int32) (Container, error) {
	f, err := os.Open(a.procDir + "/" + strconv.Itoa(int(pid)) + "/cgroup")
	if err != nil {
		return Container{}, fmt.Errorf("read cgroup: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCgroupBytes+1))
	if err != nil {
		return Container{}, fmt.Errorf("read cgroup: %w", err)
	}
	return ParseCgroup(data)
}

// find waits, up to a.wait, for the watch to show c's pod with c's
// container in its status.
func (a *Attestor) find(ctx context.Context, c Container) (_ *corev1.Pod, _ *corev1.ContainerStatus, err error) {
	var timer clock.Timer
	var start time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
			a.m.observeWait(a.clock.Now().Sub(start), err)
		}
	}()
	for {
		ch := a.changes() // before the lookup: an event after it still wakes us
		pod, ctr, why, final := a.lookup(c)
		if pod != nil {
			return pod, ctr, nil
		}
		if final {
			return nil, nil, fmt.Errorf("%w: %s", ErrRefused, why)
		}
		if timer == nil {
			a.waited.Add(1)
			start = a.clock.Now()
			timer = a.clock.NewTimer(a.wait)
		}
		select {
		case <-ch:
		case <-timer.C():
			return nil, nil, fmt.Errorf("%w: %s after waiting %s", ErrRefused, why, a.wait)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// lookup finds c in the watch's cache. Without a match, why says what is
// missing and final whether waiting cannot help.
func (a *Attestor) lookup(c Container) (pod *corev1.Pod, ctr *corev1.ContainerStatus, why string, final bool) {
	if !a.inf.HasSynced() {
		return nil, nil, "the watch of this node's pods has not synced yet", false
	}
	objs, err := a.inf.GetIndexer().ByIndex(uidIndex, c.PodUID)
	if err != nil || len(objs) == 0 {
		if a.wasDeleted(c.PodUID) {
			return nil, nil, "pod " + c.PodUID + " was deleted", true
		}
		return nil, nil, "pod " + c.PodUID + " is not on node " + a.node, false
	}
	pod, ok := objs[0].(*corev1.Pod)
	if !ok {
		return nil, nil, "pod " + c.PodUID + " is not a pod object", true
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for i := range list {
			if _, id, ok := strings.Cut(list[i].ContainerID, "://"); ok && id == c.ContainerID {
				return pod, &list[i], "", false
			}
		}
	}
	return nil, nil, "container " + c.ContainerID + " is not in the status of pod " + pod.Namespace + "/" + pod.Name, false
}

func podSelectors(pod *corev1.Pod, ctr *corev1.ContainerStatus) []selector.Selector {
	var sels []selector.Selector
	add := func(key, value string) {
		if value != "" {
			sels = append(sels, selector.Selector{Type: Type, Value: key + ":" + value})
		}
	}
	add("ns", pod.Namespace)
	add("sa", pod.Spec.ServiceAccountName)
	add("pod-name", pod.Name)
	add("pod-uid", string(pod.UID))
	add("node-name", pod.Spec.NodeName)
	add("container-name", ctr.Name)
	for k, v := range pod.Labels {
		add("pod-label", k+":"+v) // a label with an empty value is k8s:pod-label:K:
	}
	add("container-image", ctr.Image)
	add("container-image", ctr.ImageID)
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, sc := range list {
			if sc.Name == ctr.Name {
				add("container-image", sc.Image)
			}
		}
	}
	for _, ec := range pod.Spec.EphemeralContainers {
		if ec.Name == ctr.Name {
			add("container-image", ec.Image)
		}
	}
	// A value the store could never hold (too long, say) would match
	// nothing; drop it rather than fail.
	out := sels[:0]
	for _, s := range sels {
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	return selector.Normalize(out)
}

// trimPod keeps only what attestation reads, so that the watch's cache
// holds a few hundred bytes per pod rather than whole objects with managed
// fields and annotations.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	t := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.Spec.ServiceAccountName,
			NodeName:           p.Spec.NodeName,
			Containers:         trimContainers(p.Spec.Containers),
			InitContainers:     trimContainers(p.Spec.InitContainers),
		},
		Status: corev1.PodStatus{
			Phase:                      p.Status.Phase,
			ContainerStatuses:          trimStatuses(p.Status.ContainerStatuses),
			InitContainerStatuses:      trimStatuses(p.Status.InitContainerStatuses),
			EphemeralContainerStatuses: trimStatuses(p.Status.EphemeralContainerStatuses),
		},
	}
	for _, ec := range p.Spec.EphemeralContainers {
		t.Spec.EphemeralContainers = append(t.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: ec.Name, Image: ec.Image},
		})
	}
	return t, nil
}

func trimContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Image: c.Image}
	}
	return out
}

func trimStatuses(ss []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(ss) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(ss))
	for i, s := range ss {
		out[i] = corev1.ContainerStatus{Name: s.Name, Image: s.Image, ImageID: s.ImageID, ContainerID: s.ContainerID}
	}
	return out
}
