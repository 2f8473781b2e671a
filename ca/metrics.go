package ca

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the CA's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	signings  *prometheus.CounterVec
	rotations *prometheus.CounterVec
}

// NewMetrics registers the CA's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		signings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_ca_signings_total",
			Help: "SVIDs signed by the CA, by kind (x509, jwt) and result (ok, error).",
		}, []string{"kind", "result"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_ca_key_transitions_total",
			Help: "CA key state changes, by kind and new state (prepared, active, old).",
		}, []string{"kind", "state"}),
	}
	reg.MustRegister(m.signings, m.rotations)
	return m
}

// RegisterExpiry exports the seconds until the active keys expire.
func (c *CA) RegisterExpiry(reg prometheus.Registerer) {
	for _, kind := range []KeyKind{X509, JWT} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sigil_ca_active_key_expiry_seconds",
			Help:        "Seconds until the active CA key of this kind expires.",
			ConstLabels: prometheus.Labels{"kind": string(kind)},
		}, func() float64 {
			_, na, ok := activeLife(c.cur.Load(), kind)
			if !ok {
				return 0
			}
			return na.Sub(c.cfg.Now()).Seconds()
		}))
	}
}

func (m *Metrics) signed(kind KeyKind, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.signings.WithLabelValues(string(kind), result).Inc()
}

func (m *Metrics) rotation(kind KeyKind, state KeyState) {
	if m == nil {
		return
	}
	m.rotations.WithLabelValues(string(kind), string(state)).Inc()
}
