package ca

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the CA's Prometheus series.
type metrics struct {
	signings  *prometheus.CounterVec
	rotations *prometheus.CounterVec
}

// newMetrics makes the CA's series and registers them on reg (nil: on
// none); expiry gives the seconds until the active key of a kind expires.
func newMetrics(reg prometheus.Registerer, expiry func(KeyKind) float64) (*metrics, error) {
	m := &metrics{
		signings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_ca_signings_total",
			Help: "SVIDs signed by the CA, by kind (x509, jwt) and result (ok, error).",
		}, []string{"kind", "result"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_ca_key_transitions_total",
			Help: "CA key state changes, by kind and new state (prepared, active, old).",
		}, []string{"kind", "state"}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.signings, m.rotations}
	for _, kind := range []KeyKind{X509, JWT} {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sigil_ca_active_key_expiry_seconds",
			Help:        "Seconds until the active CA key of this kind expires.",
			ConstLabels: prometheus.Labels{"kind": string(kind)},
		}, func() float64 { return expiry(kind) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// activeKeyExpiry is the seconds until the active key of kind expires (0
// without one).
func (c *CA) activeKeyExpiry(kind KeyKind) float64 {
	_, na, ok := activeLife(c.cur.Load(), kind)
	if !ok {
		return 0
	}
	return na.Sub(c.cfg.Now()).Seconds()
}

func (m *metrics) signed(kind KeyKind, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.signings.WithLabelValues(string(kind), result).Inc()
}

func (m *metrics) rotation(kind KeyKind, state KeyState) {
	m.rotations.WithLabelValues(string(kind), string(state)).Inc()
}
