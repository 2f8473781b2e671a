package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	attestations *prometheus.CounterVec // result
	renewals     *prometheus.CounterVec // result
	expiry       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_agent_attestations_total", Help: "Node attestations the agent made, by result (ok, error).",
		}, []string{"result"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_agent_svid_renewals_total", Help: "Renewals of the agent's own SVID, by result (ok, error, denied).",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_agent_svid_expiry_timestamp_seconds", Help: "When the agent's own SVID expires (Unix time).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.attestations, m.renewals, m.expiry)
	}
	return m
}
