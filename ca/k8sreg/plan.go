package k8sreg

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// Selector type and the value prefix of the pod UID selector: the k8s
// workload attestor emits k8s:pod-uid:<uid>.
const (
	selType      = "k8s"
	podUIDPrefix = "pod-uid:"
)

// snapshot is what the reconciler knows about the cluster at one moment.
type snapshot struct {
	pods       []*corev1.Pod
	namespaces map[string]map[string]string // name → labels
	nodes      map[string]string            // name → UID
	identities []*compiled                  // sorted by name
}

// plan is the entries the cluster asks for and each identity's status.
type plan struct {
	entries map[string][]store.Entry // pod UID → entries
	status  map[string]IdentityStatus
}

// planner turns a snapshot into a plan; it holds only configuration.
type planner struct {
	td      spiffeid.TrustDomain
	cluster string
	deflt   *compiled // nil: no default identity
}

// agentPrefix is the parent ID prefix of every agent of the cluster.
func (p planner) agentPrefix() string {
	return "spiffe://" + p.td.Name() + "/sigil/agent/k8s_psat/" + p.cluster + "/"
}

func (p planner) plan(s snapshot) plan {
	out := plan{entries: make(map[string][]store.Entry, len(s.pods)), status: make(map[string]IdentityStatus, len(s.identities))}
	for _, c := range s.identities {
		st := IdentityStatus{ObservedGeneration: c.generation}
		if c.err != nil {
			st.TemplateError = truncate(c.err.Error())
		}
		out.status[c.name] = st
	}
	for _, pod := range s.pods {
		if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		nodeUID, ok := s.nodes[pod.Spec.NodeName]
		if !ok {
			continue
		}
		nsLabels, ok := s.namespaces[pod.Namespace]
		if !ok {
			continue
		}
		data := &templateData{
			TrustDomain: p.td.Name(), ClusterName: p.cluster, Namespace: pod.Namespace,
			ServiceAccount: serviceAccount(pod), PodName: pod.Name, PodUID: string(pod.UID),
			NodeName: pod.Spec.NodeName, PodLabels: pod.Labels, NamespaceLabels: nsLabels,
		}
		parent := p.agentPrefix() + nodeUID
		var list []store.Entry
		matched := false
		for _, c := range s.identities {
			if c.err != nil || !c.namespaces.Matches(labels.Set(nsLabels)) || !c.pods.Matches(labels.Set(pod.Labels)) {
				continue
			}
			matched = true
			e, err := p.entry(c, data, parent)
			st := out.status[c.name]
			if err != nil {
				if st.TemplateError == "" {
					st.TemplateError = truncate(fmt.Sprintf("pod %s/%s: %v", pod.Namespace, pod.Name, err))
				}
			} else {
				st.MatchedPods++
				list = appendUnique(list, e)
			}
			out.status[c.name] = st
		}
		if !matched && p.deflt != nil {
			if e, err := p.entry(p.deflt, data, parent); err == nil {
				list = append(list, e)
			}
		}
		if len(list) > 0 {
			out.entries[string(pod.UID)] = list
		}
	}
	return out
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

func (p planner) entry(c *compiled, data *templateData, parent string) (store.Entry, error) {
	raw, err := execute(c.id, data)
	if err != nil {
		return store.Entry{}, err
	}
	id, err := spiffeid.FromString(raw)
	if err != nil {
		return store.Entry{}, fmt.Errorf("spiffeIDTemplate gave %q: %w", raw, err)
	}
	if id.TrustDomain() != p.td {
		return store.Entry{}, fmt.Errorf("spiffeIDTemplate gave %q: not in trust domain %s", raw, p.td.Name())
	}
	e := store.Entry{
		SPIFFEID: id.String(), ParentID: parent,
		Selectors: selector.Normalize([]selector.Selector{
			{Type: selType, Value: "ns:" + data.Namespace},
			{Type: selType, Value: "sa:" + data.ServiceAccount},
			{Type: selType, Value: podUIDPrefix + data.PodUID},
		}),
		X509TTL: c.x509TTL, JWTTTL: c.jwtTTL, Admin: c.admin, Downstream: c.downstream,
	}
	for _, t := range c.dns {
		name, err := execute(t, data)
		if err != nil {
			return store.Entry{}, err
		}
		if name == "" || len(name) > 253 || strings.ContainsAny(name, " \t\r\n") {
			return store.Entry{}, fmt.Errorf("%s gave %q: not a DNS name", t.Name(), name)
		}
		if !slices.Contains(e.DNSNames, name) {
			e.DNSNames = append(e.DNSNames, name)
		}
	}
	for _, s := range e.Selectors {
		if err := s.Validate(); err != nil {
			return store.Entry{}, fmt.Errorf("selector: %w", err)
		}
	}
	return e, nil
}

// appendUnique adds e unless an entry with its SPIFFE ID is there already
// (two identities giving a pod the same ID make one entry).
func appendUnique(list []store.Entry, e store.Entry) []store.Entry {
	for _, x := range list {
		if x.SPIFFEID == e.SPIFFEID {
			return list
		}
	}
	return append(list, e)
}

func truncate(s string) string {
	if len(s) > 1000 {
		return s[:1000] + "..."
	}
	return s
}

// owner returns the pod UID of an entry the reconciler made: its parent is
// an agent of this cluster and it has exactly one k8s:pod-uid selector.
// Entries of any other shape are hand-made and never touched.
func (p planner) owner(e store.Entry) (string, bool) {
	if !strings.HasPrefix(e.ParentID, p.agentPrefix()) {
		return "", false
	}
	uid := ""
	for _, s := range e.Selectors {
		if s.Type == selType && strings.HasPrefix(s.Value, podUIDPrefix) {
			if uid != "" {
				return "", false
			}
			uid = strings.TrimPrefix(s.Value, podUIDPrefix)
		}
	}
	return uid, uid != ""
}

// changes is what the store needs so that it holds exactly the plan.
type changes struct {
	create []store.Entry
	update []store.Entry // ID and Revision of the stored entry
	delete []store.Entry
}

func (c changes) empty() bool { return len(c.create)+len(c.update)+len(c.delete) == 0 }

// diff compares the wanted entries with the stored ones (both by pod UID).
// Entries equal in content are left alone, so a new leader with the same
// view writes nothing; a changed one is updated in place, not replaced.
func diff(want, have map[string][]store.Entry) changes {
	var ch changes
	uids := make([]string, 0, len(want)+len(have))
	for uid := range want {
		uids = append(uids, uid)
	}
	for uid := range have {
		if _, ok := want[uid]; !ok {
			uids = append(uids, uid)
		}
	}
	sort.Strings(uids)
	for _, uid := range uids {
		w, h := slices.Clone(want[uid]), slices.Clone(have[uid])
		// Drop exact matches.
		w = slices.DeleteFunc(w, func(e store.Entry) bool {
			i := slices.IndexFunc(h, func(x store.Entry) bool { return sameContent(e, x) })
			if i < 0 {
				return false
			}
			h = slices.Delete(h, i, i+1)
			return true
		})
		// Pair the rest, same SPIFFE ID first.
		for len(w) > 0 && len(h) > 0 {
			j := slices.IndexFunc(h, func(x store.Entry) bool { return x.SPIFFEID == w[0].SPIFFEID })
			if j < 0 {
				j = 0
			}
			u := w[0]
			u.ID, u.Revision = h[j].ID, h[j].Revision
			ch.update = append(ch.update, u)
			w, h = w[1:], slices.Delete(h, j, j+1)
		}
		ch.create = append(ch.create, w...)
		ch.delete = append(ch.delete, h...)
	}
	return ch
}

func sameContent(a, b store.Entry) bool {
	return a.SPIFFEID == b.SPIFFEID && a.ParentID == b.ParentID &&
		slices.Equal(a.Selectors, b.Selectors) && a.X509TTL == b.X509TTL && a.JWTTTL == b.JWTTTL &&
		slices.Equal(a.DNSNames, b.DNSNames) && len(a.FederatesWith) == 0 && len(b.FederatesWith) == 0 &&
		a.Admin == b.Admin && a.Downstream == b.Downstream
}
