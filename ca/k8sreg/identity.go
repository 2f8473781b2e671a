package k8sreg

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GVR is the SigilIdentity resource (cluster-scoped).
var GVR = schema.GroupVersionResource{Group: "sigil.dev", Version: "v1alpha1", Resource: "sigilidentities"}

// DefaultSPIFFEIDTemplate is the template of the default identity and of a
// SigilIdentity that names none.
const DefaultSPIFFEIDTemplate = "spiffe://{{.TrustDomain}}/ns/{{.Namespace}}/sa/{{.ServiceAccount}}"

// SigilIdentity is the typed form of a SigilIdentity object.
type SigilIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IdentitySpec   `json:"spec"`
	Status            IdentityStatus `json:"status,omitempty"`
}

// IdentitySpec says which pods get which identity.
type IdentitySpec struct {
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	SPIFFEIDTemplate  string                `json:"spiffeIDTemplate,omitempty"`
	DNSNameTemplates  []string              `json:"dnsNameTemplates,omitempty"`
	X509SVIDTTL       string                `json:"x509SVIDTTL,omitempty"`
	JWTSVIDTTL        string                `json:"jwtSVIDTTL,omitempty"`
	Admin             bool                  `json:"admin,omitempty"`
	Downstream        bool                  `json:"downstream,omitempty"`
}

// IdentityStatus is what the last reconcile found.
type IdentityStatus struct {
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
	MatchedPods        int64  `json:"matchedPods"`
	TemplateError      string `json:"templateError,omitempty"`
}

// FromUnstructured decodes a SigilIdentity.
func FromUnstructured(obj map[string]any) (SigilIdentity, error) {
	var si SigilIdentity
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &si); err != nil {
		return SigilIdentity{}, fmt.Errorf("decode sigilidentity: %w", err)
	}
	return si, nil
}

// templateData is what a template sees.
type templateData struct {
	TrustDomain     string
	ClusterName     string
	Namespace       string
	ServiceAccount  string
	PodName         string
	PodUID          string
	NodeName        string
	PodLabels       map[string]string
	NamespaceLabels map[string]string
}

// compiled is a SigilIdentity ready to apply, or the reason it cannot be.
type compiled struct {
	name       string
	generation int64
	pods       labels.Selector
	namespaces labels.Selector
	id         *template.Template
	dns        []*template.Template
	x509TTL    time.Duration
	jwtTTL     time.Duration
	admin      bool
	downstream bool
	err        error // a bad spec: no pod matches
}

// maxTemplateOutput bounds what one template may produce.
const maxTemplateOutput = 2048

func compile(si SigilIdentity) *compiled {
	c := &compiled{name: si.Name, generation: si.Generation, admin: si.Spec.Admin, downstream: si.Spec.Downstream}
	fail := func(format string, args ...any) *compiled {
		c.err = fmt.Errorf(format, args...)
		return c
	}
	var err error
	if c.pods, err = selectorOf(si.Spec.PodSelector); err != nil {
		return fail("podSelector: %v", err)
	}
	if c.namespaces, err = selectorOf(si.Spec.NamespaceSelector); err != nil {
		return fail("namespaceSelector: %v", err)
	}
	src := si.Spec.SPIFFEIDTemplate
	if src == "" {
		src = DefaultSPIFFEIDTemplate
	}
	if !strings.HasPrefix(src, "spiffe://") {
		return fail("spiffeIDTemplate: must start with spiffe://")
	}
	if c.id, err = parseTemplate("spiffeIDTemplate", src); err != nil {
		return fail("%v", err)
	}
	for i, d := range si.Spec.DNSNameTemplates {
		t, err := parseTemplate(fmt.Sprintf("dnsNameTemplates[%d]", i), d)
		if err != nil {
			return fail("%v", err)
		}
		c.dns = append(c.dns, t)
	}
	if c.x509TTL, err = ttl(si.Spec.X509SVIDTTL); err != nil {
		return fail("x509SVIDTTL: %v", err)
	}
	if c.jwtTTL, err = ttl(si.Spec.JWTSVIDTTL); err != nil {
		return fail("jwtSVIDTTL: %v", err)
	}
	return c
}

func defaultIdentity() *compiled {
	c := compile(SigilIdentity{})
	c.name = ""
	return c
}

func selectorOf(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

func parseTemplate(name, src string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

func ttl(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return d, nil
}

func execute(t *template.Template, data *templateData) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&limitWriter{w: &b, n: maxTemplateOutput}, data); err != nil {
		return "", fmt.Errorf("%s: %w", t.Name(), err)
	}
	return b.String(), nil
}

type limitWriter struct {
	w *bytes.Buffer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.w.Len()+len(p) > l.n {
		return 0, fmt.Errorf("output longer than %d bytes", l.n)
	}
	return l.w.Write(p)
}
