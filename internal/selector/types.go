package selector

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Kind says what a selector type describes: a workload (attested by the
// agent on each connection) or a node (attested by the CA when an agent
// joins; used by node-alias entries).
type Kind string

// The kinds of selector types.
const (
	KindWorkload Kind = "workload"
	KindNode     Kind = "node"
)

// TypeSpec describes the selectors one attestor makes: their type, their
// kind and, for each key ("uid" in unix:uid:1000), how a value is checked.
type TypeSpec struct {
	Type     string
	Kind     Kind
	Attestor string // who makes them, for messages: "the unix workload attestor"
	Keys     []KeySpec
}

// KeySpec is one key of a selector type.
type KeySpec struct {
	Key string
	// Check reports whether value (what follows "type:key:") can ever be
	// attested; nil accepts any non-empty value.
	Check func(value string) error
}

// Types is the table of selector types a CA accepts in entries: only
// selectors some attestor can make, so that an entry that can never match
// is refused when it is written rather than ignored forever. Build it with
// NewTypes; extend it with With (a new attestor adds its TypeSpec).
type Types struct {
	specs map[string]TypeSpec
}

// NewTypes builds a table. A type given twice or without keys is an error.
func NewTypes(specs ...TypeSpec) (*Types, error) {
	return (&Types{specs: map[string]TypeSpec{}}).With(specs...)
}

// With returns a copy of t with specs added.
func (t *Types) With(specs ...TypeSpec) (*Types, error) {
	out := &Types{specs: maps.Clone(t.specs)}
	for _, s := range specs {
		if _, dup := out.specs[s.Type]; dup {
			return nil, fmt.Errorf("selector type %q given twice", s.Type)
		}
		if s.Kind != KindWorkload && s.Kind != KindNode {
			return nil, fmt.Errorf("selector type %q: kind %q: want workload or node", s.Type, s.Kind)
		}
		if len(s.Keys) == 0 {
			return nil, fmt.Errorf("selector type %q has no keys", s.Type)
		}
		out.specs[s.Type] = s
	}
	return out, nil
}

// Builtin is the table of the attestors in Sigil: unix and k8s for
// workloads, x509pop and k8s_psat for nodes (join tokens make no node
// selectors).
func Builtin() *Types {
	return &Types{specs: map[string]TypeSpec{"unix": Unix(), "k8s": K8s(), "x509pop": X509PoP(), "k8s_psat": K8sPSAT()}}
}

// Names lists the types of kind, sorted.
func (t *Types) Names(kind Kind) []string {
	var out []string
	for name, s := range t.specs {
		if s.Kind == kind {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// ErrUnattestable is wrapped by Check's errors: no attestor here can make
// the selector, so an entry that requires it would never match.
var ErrUnattestable = errors.New("selector can never match")

// Check reports whether s can be attested for a subject of kind: its type
// is in the table and of that kind, its key is one the type has, and its
// value one the attestor can make.
func (t *Types) Check(kind Kind, s Selector) error {
	spec, ok := t.specs[s.Type]
	if !ok {
		return fmt.Errorf("%w: %q: no attestor makes %q selectors here (%s selector types: %s)",
			ErrUnattestable, s.String(), s.Type, kind, orNone(t.Names(kind)))
	}
	if spec.Kind != kind {
		if kind == KindNode {
			return fmt.Errorf("%w: %q: %s selectors describe workloads; a node-alias entry needs node selectors (%s)",
				ErrUnattestable, s.String(), s.Type, orNone(t.Names(KindNode)))
		}
		return fmt.Errorf("%w: %q: %s selectors describe nodes and are for node-alias entries (parent_id the CA's ID, spiffe://TRUST-DOMAIN/sigil/ca); a workload needs %s selectors",
			ErrUnattestable, s.String(), s.Type, orNone(t.Names(KindWorkload)))
	}
	key, value, ok := strings.Cut(s.Value, ":")
	var ks *KeySpec
	for i := range spec.Keys {
		if spec.Keys[i].Key == key {
			ks = &spec.Keys[i]
		}
	}
	if !ok || ks == nil {
		return fmt.Errorf("%w: %q: %s has no key %q (keys: %s)", ErrUnattestable, s.String(), spec.Attestor, key, keyList(spec))
	}
	if value == "" {
		return fmt.Errorf("%w: %q: empty value after %s:%s:", ErrUnattestable, s.String(), s.Type, key)
	}
	if ks.Check != nil {
		if err := ks.Check(value); err != nil {
			return fmt.Errorf("%w: %q: %v", ErrUnattestable, s.String(), err)
		}
	}
	return nil
}

func keyList(spec TypeSpec) string {
	keys := make([]string, len(spec.Keys))
	for i, k := range spec.Keys {
		keys[i] = k.Key
	}
	return strings.Join(keys, ", ")
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// Unix is the unix workload attestor's table: peer credentials and the
// executable (agent/attest/unix).
func Unix() TypeSpec {
	return TypeSpec{Type: "unix", Kind: KindWorkload, Attestor: "the unix workload attestor", Keys: []KeySpec{
		{Key: "uid", Check: decimalID("a uid")},
		{Key: "gid", Check: decimalID("a gid")},
		{Key: "user", Check: name("a user name")},
		{Key: "group", Check: name("a group name")},
		{Key: "supplementary_gid", Check: decimalID("a gid")},
		{Key: "supplementary_group", Check: name("a group name")},
		{Key: "path", Check: absPath},
		{Key: "sha256", Check: hexDigest(32)},
	}}
}

// K8s is the Kubernetes workload attestor's table (agent/attest/k8s).
func K8s() TypeSpec {
	return TypeSpec{Type: "k8s", Kind: KindWorkload, Attestor: "the k8s workload attestor", Keys: []KeySpec{
		{Key: "ns", Check: name("a namespace")},
		{Key: "sa", Check: name("a service account name")},
		{Key: "pod-name", Check: name("a pod name")},
		{Key: "pod-uid", Check: name("a pod UID")},
		{Key: "pod-label", Check: labelPair},
		{Key: "container-name", Check: name("a container name")},
		{Key: "container-image"},
		{Key: "node-name", Check: name("a node name")},
	}}
}

// K8sPSAT is the k8s_psat node attestor's table (ca/nodeattest).
func K8sPSAT() TypeSpec {
	return TypeSpec{Type: "k8s_psat", Kind: KindNode, Attestor: "the k8s_psat node attestor", Keys: []KeySpec{
		{Key: "cluster", Check: name("a cluster name")},
		{Key: "agent_ns", Check: name("a namespace")},
		{Key: "agent_sa", Check: name("a service account name")},
		{Key: "agent_pod_name", Check: name("a pod name")},
		{Key: "agent_pod_uid", Check: name("a pod UID")},
		{Key: "agent_pod_label", Check: labelPair},
		{Key: "agent_node_name", Check: name("a node name")},
		{Key: "agent_node_uid", Check: name("a node UID")},
		{Key: "agent_node_ip"},
		{Key: "agent_node_label", Check: labelPair},
	}}
}

// labelPair checks a Kubernetes label as the attestors write it: KEY:VALUE
// (the value may be empty).
func labelPair(v string) error {
	if k, _, ok := strings.Cut(v, ":"); !ok || k == "" {
		return errors.New("want a label as KEY:VALUE, e.g. app:cart")
	}
	return nil
}

// X509PoP is the x509pop node attestor's table (ca/nodeattest).
func X509PoP() TypeSpec {
	return TypeSpec{Type: "x509pop", Kind: KindNode, Attestor: "the x509pop node attestor", Keys: []KeySpec{
		{Key: "subject", Check: prefixed("cn:")},
		{Key: "serialnumber", Check: lowerHex},
		{Key: "san", Check: prefixed("dns:")},
		{Key: "ca", Check: func(v string) error {
			fp, ok := strings.CutPrefix(v, "fingerprint:")
			if !ok {
				return errors.New("want ca:fingerprint:SHA256-HEX")
			}
			return hexDigest(32)(fp)
		}},
	}}
}

func decimalID(what string) func(string) error {
	return func(v string) error {
		if _, err := strconv.ParseUint(v, 10, 32); err != nil {
			return fmt.Errorf("want %s in decimal (0 to 4294967295), e.g. 1000", what)
		}
		return nil
	}
}

func name(what string) func(string) error {
	return func(v string) error {
		if strings.ContainsAny(v, ":/") {
			return fmt.Errorf("%q is not %s", v, what)
		}
		return nil
	}
}

func absPath(v string) error {
	if !strings.HasPrefix(v, "/") || path.Clean(v) != v {
		return fmt.Errorf("want an absolute, clean path such as /usr/bin/app (as /proc/PID/exe names it)")
	}
	return nil
}

func hexDigest(n int) func(string) error {
	return func(v string) error {
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != n || strings.ToLower(v) != v {
			return fmt.Errorf("want %d lower-case hex digits", 2*n)
		}
		return nil
	}
}

func lowerHex(v string) error {
	if _, err := hex.DecodeString(strings.Repeat("0", len(v)%2) + v); err != nil || strings.ToLower(v) != v {
		return errors.New("want lower-case hex digits")
	}
	return nil
}

func prefixed(p string) func(string) error {
	return func(v string) error {
		rest, ok := strings.CutPrefix(v, p)
		if !ok || rest == "" {
			return fmt.Errorf("want %sVALUE", p)
		}
		return nil
	}
}
