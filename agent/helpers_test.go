package agent_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/upstream"
)

// value reads a counter or gauge from reg by name (and, if label is not
// empty, by the value of its one label); 0 if absent.
func value(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// otherRoots are the roots of an unrelated CA.
func otherRoots(t *testing.T) []*x509.Certificate {
	t.Helper()
	up, err := upstream.NewSelfSigned(context.Background(), upstream.SelfSignedConfig{TrustDomain: td, Keys: keys.NewMemory(), CertPath: filepath.Join(t.TempDir(), "root.crt")})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := up.Roots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return roots
}
